"""The prompt optimizer: fits agent transcripts into a model's context window."""
