"""The model: the rule's declaration, the genome, the actor, the spec step and the random streams."""
