"""The analysis's defaults that the command lines show in ``--help`` (`metarl.cli.parsers`), here because this
module imports nothing: `evaluation` and `gym_rule` take them from it."""

RESCORE_EPISODES = 64  # held-out lifetimes per candidate when choosing which of a run's elites to ship
RULE_REWARDS = ("env", "height")  # what the rule sees through Gymnasium (`gym_rule`)
