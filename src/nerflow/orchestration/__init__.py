"""Running the steps as a workflow: the generated dvc.yaml (wiring), reads of a repository at a
revision (versioned), and scheduled retraining on one machine (retrain)."""
