"""Text classification: a label per text (sentiment, topic, intent). ``task.TASK`` is what the
steps call (nerflow.tasks.base.Task)."""
