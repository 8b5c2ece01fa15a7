"""The tasks nerflow runs through one workflow, each behind the ``Task`` interface
(nerflow.tasks.base): ``token`` (a tag per token: NER) and ``text`` (a label per text). The
registry (nerflow.tasks.registry) gives the steps the task a dataset, features or model holds."""
