"""Layer 5, developer tools: porting weights, measuring the face template, model-card figures."""
