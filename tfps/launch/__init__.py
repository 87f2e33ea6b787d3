"""tfps-launch: bring a parameter-server cluster up and down (see `tfps.launch.cli`).

* `entry`, `cli`, `config`: the executable, its command line, and the typed config of each
  mode (a launch, ``--emit``, ``--doctor``);
* `run/`: what runs a cluster (plan, supervisor, restarts, logs, namespaces, peers);
* `doctor`: the preflight checks of ``--doctor``.

The manifests of ``--emit`` are `tfps.emit`'s; the cluster model is `tfps.cluster`'s.
"""
