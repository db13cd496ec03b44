"""Training: the SAE, its sparse autograd ops, batches from disk, the training loop."""
