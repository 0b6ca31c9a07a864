# Declares every METAFLOW_NOMAD_* setting so it shows up in metaflow.metaflow_config.
from metaflow.metaflow_config_funcs import from_conf

from metaflow_nomad.config import CONFIG_NAMES, SECRET_NAMES

for _name in CONFIG_NAMES:
    if _name not in SECRET_NAMES:
        globals()[_name] = from_conf(_name)
del _name
