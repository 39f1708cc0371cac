#!/usr/bin/env python3
"""Print the broker's queue statistics as they are published (about once a second).

    python3 stats_subscriber.py [tcp://127.0.0.1:5557]
"""
import sys

import conveyor

endpoint = sys.argv[1] if len(sys.argv) > 1 else "tcp://127.0.0.1:5557"
for topic, stats in conveyor.subscribe(endpoint, topics=("stats",)):
    q = stats["queue_by_priority"]
    print(f"queued {stats['queue_size']:>5} (U{q['urgent']} H{q['high']} N{q['normal']} L{q['low']})  "
          f"running {stats['current_processing']}/{stats['max_workers']}  workers {stats['workers_connected']}  "
          f"done {stats['total_success']} failed {stats['total_failed']} timed out {stats['total_timeout']}",
          flush=True)
