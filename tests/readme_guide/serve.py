"""`python -m readme_guide.serve <serve_policy.py arguments>`: scripts/serve_policy.py with the guide's train
config (its tiny variant, `config.tiny_config()`) registered under its name, as pasting it into `_CONFIGS` of
src/openpi/training/config.py registers it."""

import pathlib
import runpy

from openpi.training import config as _config
from readme_guide import config as guide_config

SERVE_POLICY = pathlib.Path(__file__).parents[2] / "scripts" / "serve_policy.py"

if __name__ == "__main__":
    _config._CONFIGS_DICT[guide_config.NAME] = guide_config.tiny_config()
    runpy.run_path(str(SERVE_POLICY), run_name="__main__")
