"""Ray Serve deployments: thin wrappers around the callqc domain library, one file per stage."""
