"""The pipeline's steps (data, validate, preprocess, train, evaluate, gate, package), each a
function over explicit paths and one params section, reaching its task through
nerflow.tasks.registry."""
