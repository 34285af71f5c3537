"""A whole federation on one machine, above both roles: dev chain, processes, `lethe up`/`demo`."""
