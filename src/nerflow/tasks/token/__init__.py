"""Token classification (NER): a tag per word, or per character for character-level corpora
such as KLUE-NER. ``task.TASK`` is what the steps call (nerflow.tasks.base.Task)."""
