"""Robot-specific policies: data transforms per robot, and the Policy that runs a model on observations."""
