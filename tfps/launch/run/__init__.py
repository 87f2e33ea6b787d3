"""What runs a cluster once ``tfps-launch`` has a valid `LaunchConfig`: the plan of every task,
the processes and their namespaces, their output, restarts, and the launchers' watch on each
other. Nothing here reads the command line (`tfps.launch.cli`, `tfps.launch.config`).

* `plan`: each task's command, environment and ``TF_CONFIG`` (what ``--dry-run`` prints);
* `scripts`: whether SCRIPT can run, checked before anything starts;
* `namespaces`: the private network and PID namespaces of an all-local cluster;
* `logs`: the launcher's lines and every task's output, prefixed, and the log files;
* `supervisor`: starts, watches, restarts and ends the tasks; `signals`: what the launcher
  was asked by signals;
* `failures`: what a task's death (or hang) means (restart what, or end the cluster) and the
  table;
* `hangs`: which tasks hang (`rpc`: a GetStatus call spoken by hand; `channel`: the chief's
  reports); `relay`: asking another host's launcher to restart its hung task;
* `metrics_http`: ``--metrics-port``, the chief's Prometheus metrics on the launcher's host;
* `peers`: launchers under an engine watching each other through the cluster's addresses.
"""
