# Registration only; the implementation lives in the metaflow_nomad package.
STEP_DECORATORS_DESC = [("nomad", "metaflow_nomad.plugin.decorator.NomadDecorator")]
CLIS_DESC = [
    ("nomad", "metaflow_nomad.plugin.nomad_cli.cli"),
    ("nomad-workflows", "metaflow_nomad.plugin.deploy.cli.cli"),
]
TRAMPOLINE_CLIS_DESC = [("nomad", "metaflow_nomad.plugin.nomad_cli.cli")]
DEPLOYER_IMPL_PROVIDERS_DESC = [
    ("nomad-workflows", "metaflow_nomad.plugin.deploy.deployer.NomadWorkflowsDeployer")
]
