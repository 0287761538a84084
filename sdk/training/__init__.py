"""Training and scoring of the zoo models: the deterministic trainer, the recipe and protocol of each model, metrics."""
