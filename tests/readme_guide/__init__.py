"""The README's "Fine-tuning to your own robot" guide, its code pasted as written (only the README's own typos
corrected, and one line LeRobot data needs; see `ur5_policy`), each block in the module a user would put it in:
`ur5_policy` (the policy inputs and outputs), `config` (the data config and the train config), `env` and
`your_client_main` (the robot client). Not from the README: `data` (generated UR5 data, the tokenizer offline) and
`serve`, which runs scripts/serve_policy.py with the guide's train config registered, as pasting it into `_CONFIGS`
of src/openpi/training/config.py registers it."""
