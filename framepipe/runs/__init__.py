"""The runs: the glue from a config to the engine to the writer, side by side.

- :mod:`framepipe.runs.common`: the skeleton both share (find the inputs, write and count
  the records, close the engine and fill in the summary) and :class:`RunSummary`;
- :mod:`framepipe.runs.sample`: :func:`~framepipe.runs.sample.sample`, n frames per clip
  saved with a manifest;
- :mod:`framepipe.runs.caption`: :class:`~framepipe.runs.caption.Pipeline` and
  :func:`~framepipe.runs.caption.caption`, a vision-language model's answers per clip.

Neither run imports the other. The public names are re-exported by :mod:`framepipe`.
"""
