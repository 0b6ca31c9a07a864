"""``nomad-workflows``: deploying a flow to Nomad, and Metaflow's Deployer API for it."""
