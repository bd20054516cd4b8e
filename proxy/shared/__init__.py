"""Optional state shared by replicas through Redis (or Valkey): one Nango index, webhook fan-out, one Nango
rate budget and circuit breaker, short locks, the wrong-reference count; all signed where a forgery could
change a call (`proxy.shared.signing`). Configured by the config's `redis` section or `REDIS_URL`;
without either nothing here runs.

Redis is never on a call's critical path for longer than `RedisSettings.op_timeout`, and every feature falls
back to what one replica does on its own while Redis is slow, down or restarted empty.
"""

from proxy.shared.budget import SharedBreaker, TokenBucket
from proxy.shared.callcounts import SharedCallCounts
from proxy.shared.cluster import Cluster
from proxy.shared.fanout import Announcement, Fanout
from proxy.shared.index import IndexMeta, IndexStore
from proxy.shared.locks import Lease, LeasedLock
from proxy.shared.signing import Signer
from proxy.shared.store import RedisSettings, SharedStore, SharedUnavailable

__all__ = [
    "Announcement",
    "Cluster",
    "Fanout",
    "IndexMeta",
    "IndexStore",
    "Lease",
    "LeasedLock",
    "RedisSettings",
    "SharedBreaker",
    "SharedCallCounts",
    "SharedStore",
    "SharedUnavailable",
    "Signer",
    "TokenBucket",
]
