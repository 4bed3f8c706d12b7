"""The README's "Fine-tuning to your own robot" guide, its code pasted as written (only the README's own typos
corrected), each block in the module a user would put it in: `ur5_policy` (the policy inputs and outputs),
`config` (the data config and the train config), `env` and `your_client_main` (the robot client); `serve` runs
scripts/serve_policy.py with the guide's train config registered, as pasting it into `_CONFIGS` does."""
