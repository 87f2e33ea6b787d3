"""Code the examples and the benchmarks share. Plain TensorFlow: no tfps import."""
