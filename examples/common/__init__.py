"""Code the examples share: `planted_clicks` (plain TensorFlow, no tfps import: the
benchmarks' baselines use it too) and `export_flag` (the ``--export_dir`` flag, on tfps)."""
