"""The registry of robot records, by name: a robot is its `policies/<robot>_policy.py` plus one line here. The
policy server's `--env` choices are these names in upper case."""

from openpi.policies import aloha_policy
from openpi.policies import calvin_policy
from openpi.policies import droid_policy
from openpi.policies import libero_policy
from openpi.policies import robot as _robot
from openpi.policies import ur5_policy

ROBOTS: dict[str, _robot.Robot] = {
    robot.name: robot
    for robot in (
        aloha_policy.ALOHA,
        aloha_policy.ALOHA_SIM,
        droid_policy.DROID,
        calvin_policy.CALVIN,
        libero_policy.LIBERO,
        ur5_policy.UR5,
    )
}
