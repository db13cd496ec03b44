"""Collection: text domains -> tokenized sequences -> model activations on disk."""
