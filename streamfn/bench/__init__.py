"""``streamfn bench``: the benchmark tool (extra ``bench``), a user feature kept apart from the
library. Nothing in ``streamfn`` or ``streamfn.connectors`` imports this package
(``tests/test_imports.py`` keeps it so).

- :mod:`.kit`: what the scenarios share (stamps, histograms, pacing, worker processes, drain clock);
- :mod:`.engine`, :mod:`.kafka`, :mod:`.sqs`, :mod:`.kinesis`, :mod:`.http`: streamfn next to a
  baseline in the same run;
- :mod:`.fill`, :mod:`.kafka_load`, :mod:`.http_load`: load for your own pipelines.
"""
