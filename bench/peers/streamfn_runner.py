"""streamfn: KafkaSource and the same handler as ``streamfn bench kafka-load``'s worker
(``batch_size``, ``parallelization_factor``, bisect to an on-failure destination on poison)."""

from __future__ import annotations

import sys

import orjson

from streamfn import logs
from streamfn.bench.kafka_load import run_worker
from streamfn.runtime import run_loop

if __name__ == "__main__":
    logs.configure("warning")
    run_loop(run_worker(orjson.loads(sys.argv[1])))
