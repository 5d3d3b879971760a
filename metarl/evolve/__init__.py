"""Evolution: the problem (lifetime fitness), searchers (the GA, adapters), the trainer, stages, torchrun."""
