"""metarl: evolve learning rules for stochastic actors with a genetic algorithm.

A small stochastic actor network controls batched pendulum environments; after every
step a learned rule (a tiny message-passing network, the genome) changes the actor's
weights, biases and noise levels. A genetic algorithm scores each rule by whole lifetimes
of freshly initialised actors, the population as one tensor batch.

Commands (installed with the package, or the scripts at the repository's root):

    metarl-train CONFIG.yaml          # run_config.py: evolve; writes a run folder
    metarl-show-env Pendulum          # show_environment.py: animate an environment
    metarl-show-results MODEL.yaml    # show_results.py: replay, plot, --evaluate a rule

Python API:

    metarl.config.load(path, overrides)        -> Config (typed, validated)
    metarl.envs.make(name, batch, ...)         -> batched environment
    metarl.lifetime.evaluate(genomes, layout, config, seed=, generation=)  -> fitness (P,)
    metarl.training.new_run(config), Trainer   -> the GA loop with checkpoints
    metarl.io.load_model(path)                 -> SavedModel (genome, layout, config)
    metarl.evaluation.evaluate_rule(...)       -> the rule against its baselines

Modules: envs (one environment per file), rng, config, genome, actor, rule, reference,
fused + compiled (torch.compile step), native (C++ kernel), lifetime, ga, training,
io, logs, render, plots, evaluation, distributed, scripts (the three commands).
See README.md and docs/SPEC.md.
"""

__version__ = "0.1.0"
