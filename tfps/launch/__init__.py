"""tfps-launch: bring a parameter-server cluster up and down (see `tfps.launch.cli`)."""
