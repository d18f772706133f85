"""Every member of faust-streaming, mode and aiokafka that is not their public API, in one place.

The batch path (batch_consumer, changelog_restore, raw_records, table_state, the sink's producer)
replaces Faust's per-message delivery and reads Faust's offset bookkeeping, its table recovery and its
stores' data; this module is the only one that names those members. `check()` runs at start-up: a
library upgrade that renamed or reshaped one of them stops the worker with one line naming the member
and the versions this service is pinned to, instead of a failure in the middle of a rebalance.

pyproject.toml pins faust-streaming exactly and aiokafka to a minor version for this reason; the
integration and reliability suites exercise these members against a real broker.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, MutableMapping
from dataclasses import dataclass
from importlib import metadata
from typing import Any

from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP

PINNED_FALLBACK = ("faust-streaming==0.15.3", "aiokafka<0.15,>=0.14.0")


@dataclass(frozen=True, slots=True)
class Member:
    """A member relied on: `params` lists a method's parameter names (None: an attribute)."""

    module: str
    owner: str
    name: str
    params: tuple[str, ...] | None = None

    @property
    def qualname(self) -> str:
        return f"{self.module}.{self.owner}.{self.name}"


_CONSUMER = ("faust.transport.drivers.aiokafka", "Consumer")
_RECOVERY = ("faust.tables.recovery", "Recovery")
_MEMORY = ("faust.stores.memory", "Store")
_ROCKSDB = ("faust.stores.rocksdb", "Store")

MEMBERS: tuple[Member, ...] = (
    Member(*_CONSUMER, "_drain_messages", ("self", "fetcher")),
    Member(*_CONSUMER, "_wait_next_records", ("self", "timeout")),
    Member(*_CONSUMER, "_new_offset", ("self", "tp")),
    Member(*_CONSUMER, "_filter_tps_with_pending_acks", ("self", "topics")),
    Member(*_CONSUMER, "_add_gap", ("self", "tp", "offset_from", "offset_to")),
    Member(*_CONSUMER, "_to_message", ("self", "tp", "record")),
    Member(*_CONSUMER, "maybe_wait_for_commit_to_finish", ("self",)),
    Member(*_CONSUMER, "_read_offset"),
    Member(*_CONSUMER, "_committed_offset"),
    Member(*_CONSUMER, "_n_acked"),
    Member(*_CONSUMER, "_commit_every"),
    Member(*_CONSUMER, "_active_partitions"),
    Member(*_CONSUMER, "_buffered_partitions"),
    Member(*_CONSUMER, "_stopped"),
    Member(*_RECOVERY, "in_recovery"),
    Member(*_RECOVERY, "active_tps"),
    Member(*_RECOVERY, "tp_to_table"),
    Member(*_RECOVERY, "active_offsets"),
    Member(*_RECOVERY, "active_highwaters"),
    Member(*_RECOVERY, "completed"),
    Member("faust.tables.manager", "TableManager", "changelog_queue"),
    Member("faust.tables.manager", "TableManager", "recovery"),
    Member("faust.transport.drivers.aiokafka", "Producer", "_producer"),
    # The partitioner and metadata send() partitions a keyed record with (keyed_partitions).
    Member("aiokafka.producer.producer", "AIOKafkaProducer", "_partitioner"),
    Member("aiokafka.producer.producer", "AIOKafkaProducer", "_metadata"),
    Member(*_MEMORY, "data"),
    Member(*_MEMORY, "_key_partition"),
    Member("aiokafka.consumer.fetcher", "PartitionRecords", "_consumer_record", ("self", "tp", "record")),
    Member("aiokafka.consumer.fetcher", "PartitionRecords", "_key_deserializer"),
    Member("aiokafka.consumer.fetcher", "PartitionRecords", "_value_deserializer"),
    Member("faust.transport.drivers.aiokafka", "Consumer", "_new_consumer_thread", ("self",)),
    Member("faust.transport.drivers.aiokafka", "AIOKafkaConsumerThread", "_ensure_consumer", ("self",)),
    Member("aiokafka.consumer.consumer", "AIOKafkaConsumer", "_fetcher"),
    Member("aiokafka.consumer.fetcher", "Fetcher", "_fetch_max_wait_ms"),
    Member(
        "aiokafka.consumer.fetcher",
        "Fetcher",
        "_proc_fetch_request",
        ("self", "assignment", "node_id", "request"),
    ),
)
# Only with UPSELL_PROCESSING_GUARANTEE=exactly_once (runtime/kafka/transactions.py).
EXACTLY_ONCE_MEMBERS: tuple[Member, ...] = (
    Member(
        "faust.transport.drivers.aiokafka",
        "AIOKafkaConsumerThread",
        "_create_worker_consumer",
        ("self", "transport"),
    ),
    Member("aiokafka.consumer.consumer", "AIOKafkaConsumer", "_isolation_level"),
    Member("faust.transport.drivers.aiokafka", "Producer", "_settings_default", ("self",)),
    Member("faust.transport.drivers.aiokafka", "Producer", "_settings_auth", ("self",)),
    Member("faust.transport.drivers.aiokafka", "Producer", "_settings_extra", ("self",)),
    Member("aiokafka.producer.producer", "AIOKafkaProducer", "_txn_manager"),
    Member("aiokafka.producer.transaction_manager", "TransactionManager", "wait_for_pid", ("self",)),
    # The retry after CONCURRENT_TRANSACTIONS, a module constant (set_transaction_retry_backoff).
    Member("aiokafka.producer.sender", "AddPartitionsToTxnHandler", "BACKOFF_OVERRIDE"),
    # TxnOffsetCommit with the group's generation (commit_offsets_with_group_metadata, and
    # ConsumerAdapter.membership).
    Member("aiokafka.producer.producer", "AIOKafkaProducer", "_sender"),
    Member("aiokafka.producer.sender", "Sender", "_do_txn_offset_commit", ("self", "offsets", "group_id")),
    Member(
        "aiokafka.producer.sender",
        "Sender",
        "_find_coordinator",
        ("self", "coordinator_type", "coordinator_key"),
    ),
    Member(
        "aiokafka.producer.sender",
        "TxnOffsetCommitHandler",
        "__init__",
        ("self", "sender", "offsets", "group_id"),
    ),
    Member("aiokafka.producer.sender", "TxnOffsetCommitHandler", "_offsets"),
    Member("aiokafka.producer.sender", "TxnOffsetCommitHandler", "_group_id"),
    Member(
        "aiokafka.producer.transaction_manager", "TransactionManager", "error_transaction", ("self", "exc")
    ),
    Member("faust.transport.consumer", "ThreadDelegateConsumer", "_thread"),
    Member("aiokafka.consumer.consumer", "AIOKafkaConsumer", "_coordinator"),
    Member("aiokafka.consumer.group_coordinator", "GroupCoordinator", "generation"),
    Member("aiokafka.consumer.group_coordinator", "GroupCoordinator", "member_id"),
    Member("aiokafka.consumer.group_coordinator", "GroupCoordinator", "_group_instance_id"),
)
ROCKSDB_MEMBERS: tuple[Member, ...] = (
    Member(*_ROCKSDB, "_db_for_partition", ("self", "partition")),
    Member(*_ROCKSDB, "_key_index"),
    Member(*_ROCKSDB, "set_persisted_offset", ("self", "tp", "offset")),
)


def _names_used(cls: type) -> set[str]:
    """Attribute names the class (with its bases) defines or uses in its methods: an instance attribute
    assigned in __init__ exists only on instances, but its name is in the code that assigns it."""
    names: set[str] = set()
    for klass in cls.__mro__:
        names.update(vars(klass))
        for value in vars(klass).values():
            func = getattr(value, "fget", value)
            code = getattr(func, "__code__", None)
            if code is not None:
                names.update(code.co_names)
    return names


def problem(member: Member) -> str | None:
    """What is wrong with one member, or None if it is there with the expected shape."""
    try:
        module = __import__(member.module, fromlist=[member.owner])
        cls = getattr(module, member.owner)
    except (ImportError, AttributeError):
        return f"{member.module}.{member.owner} is missing"
    if member.params is None:
        return None if member.name in _names_used(cls) else f"{member.qualname} is missing"
    func = inspect.getattr_static(cls, member.name, None)
    if func is None or not callable(func):
        return f"{member.qualname}() is missing"
    params = tuple(inspect.signature(func).parameters)
    if params[: len(member.params)] != member.params:
        return f"{member.qualname}{params} does not take {member.params}"
    return None


def _versions() -> tuple[str, str]:
    installed = []
    for dist in ("faust-streaming", "aiokafka"):
        try:
            installed.append(f"{dist} {metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            installed.append(f"{dist} (not installed)")
    try:
        requires = metadata.requires("upsell-triggers") or []
    except metadata.PackageNotFoundError:
        requires = []
    pinned = [r.replace(" ", "") for r in requires if r.startswith(("faust-streaming", "aiokafka"))]
    return ", ".join(installed), ", ".join(pinned or PINNED_FALLBACK)


def check(rocksdb: bool = False, members: Iterable[Member] | None = None, exactly_once: bool = False) -> None:
    """Stops start-up with one line if a member this service relies on is missing or reshaped."""
    optional = (ROCKSDB_MEMBERS if rocksdb else ()) + (EXACTLY_ONCE_MEMBERS if exactly_once else ())
    wanted = list(members if members is not None else MEMBERS + optional)
    for member in wanted:
        found = problem(member)
        if found is not None:
            installed, pinned = _versions()
            raise SystemExit(
                f"upsell-triggers cannot run on the installed Kafka libraries: {found} "
                f"(installed {installed}; install the pinned versions {pinned})"
            )


class _ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    """Faust's consumer thread; once its aiokafka consumer started, the fetch wait is set (fetch_wait).
    With read_committed, its consumer reads only committed transactions (Faust sets that only with its
    own processing_guarantee=exactly_once, which also replaces its producer by its transactional ones)."""

    fetch_max_wait_ms: int | None = None
    read_committed = False

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        if self.read_committed:
            consumer._isolation_level = "read_committed"  # handed to its fetcher, created at start
        return consumer

    async def on_start(self) -> None:
        await super().on_start()
        if self.fetch_max_wait_ms is not None:
            set_fetch_max_wait(self._ensure_consumer(), self.fetch_max_wait_ms)


class ConsumerAdapter(faust_aiokafka.Consumer):
    """Faust's aiokafka consumer with its private bookkeeping under names of this service's own.

    Subclasses override the public hooks (drain, new_offset, tps_with_pending_acks) and may set
    fetch_max_wait_ms (how long the broker may hold a fetch that finds nothing; None: Faust's 1.5 s);
    the private methods Faust calls route to them here."""

    fetch_max_wait_ms: int | None = None

    @property
    def read_committed(self) -> bool:
        """Whether this consumer reads every topic with isolation.level=read_committed."""
        return False

    def membership(self) -> tuple[int, str, str | None]:
        """The group membership now: (generation, member id, group instance id), read from aiokafka's
        consumer in Faust's consumer thread (plain attributes, replaced at each join)."""
        return aiokafka_membership(self._thread._ensure_consumer())

    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        thread = _ConsumerThread(self, loop=self.loop, beacon=self.beacon)
        thread.fetch_max_wait_ms = self.fetch_max_wait_ms
        thread.read_committed = self.read_committed
        return thread

    # Faust's hooks -> this service's.
    async def _drain_messages(self, fetcher: Any) -> None:
        await self.drain(fetcher)

    def _new_offset(self, tp: TP) -> int | None:
        return self.new_offset(tp)

    def _filter_tps_with_pending_acks(self, topics: Any = None) -> Iterator[TP]:
        return self.tps_with_pending_acks(topics)

    async def drain(self, fetcher: Any) -> None:
        await super()._drain_messages(fetcher)

    def new_offset(self, tp: TP) -> int | None:
        """The offset to commit for tp (Faust's: from its per-offset acks)."""
        result: int | None = super()._new_offset(tp)
        return result

    def tps_with_pending_acks(self, topics: Any = None) -> Iterator[TP]:
        """The partitions with acked offsets not committed yet (Faust's: from its per-offset acks)."""
        return iter(super()._filter_tps_with_pending_acks(topics))

    # Faust's bookkeeping, read and written by the batch path.
    @property
    def read_offsets(self) -> MutableMapping[TP, int | None]:
        """tp -> the last offset handed on (a defaultdict: None if none)."""
        offsets: MutableMapping[TP, int | None] = self._read_offset
        return offsets

    @property
    def committed_offsets(self) -> MutableMapping[TP, int | None]:
        offsets: MutableMapping[TP, int | None] = self._committed_offset
        return offsets

    @property
    def n_acked(self) -> int:
        """Records acked since the last commit by count (Faust commits every commit_every of them)."""
        return int(self._n_acked)

    @n_acked.setter
    def n_acked(self, n: int) -> None:
        self._n_acked = n

    @property
    def commit_every(self) -> int | None:
        every: int | None = self._commit_every
        return every

    @property
    def active_partitions(self) -> set[TP] | None:
        """The partitions not paused (None before the first assignment)."""
        active: set[TP] | None = self._active_partitions
        return active

    @property
    def buffered_partitions(self) -> set[TP]:
        buffered: set[TP] = self._buffered_partitions
        return buffered

    def stop_flags(self, fetcher: Any) -> tuple[Callable[[], bool], Callable[[], bool]]:
        """(consumer stopped, fetcher stopped): what Faust's drain loop checks before each fetch."""
        return self._stopped.is_set, fetcher._stopped.is_set

    async def next_records(self, timeout: float) -> tuple[Any, set[TP] | None]:
        """(records by partition or None, the active partitions) of the next fetch."""
        result: tuple[Any, set[TP] | None] = await self._wait_next_records(timeout)
        return result

    async def add_gap(self, tp: TP, offset_from: int, offset_to: int) -> None:
        await self._add_gap(tp, offset_from, offset_to)

    def to_message(self, tp: TP, record: Any) -> Any:
        return self._to_message(tp, record)

    async def wait_for_commit_in_progress(self) -> None:
        await self.maybe_wait_for_commit_to_finish()


class RecoveryView:
    """Faust's table recovery (app.tables.recovery), which TableManagerT does not declare."""

    __slots__ = ("_tables",)

    def __init__(self, tables: Any) -> None:
        self._tables = tables

    @property
    def _recovery(self) -> Any:
        return self._tables.recovery

    @property
    def in_recovery(self) -> bool:
        return bool(self._recovery.in_recovery)

    @property
    def completed(self) -> bool:
        return bool(self._recovery.completed.is_set())

    @property
    def active_tps(self) -> set[TP]:
        active: set[TP] = self._recovery.active_tps
        return active

    def table_of(self, tp: TP) -> Any:
        """The table whose changelog partition tp is, or None."""
        return self._recovery.tp_to_table.get(tp)

    @property
    def active_offsets(self) -> MutableMapping[TP, int]:
        """tp -> the last changelog offset the recovery loop counts as applied."""
        offsets: MutableMapping[TP, int] = self._recovery.active_offsets
        return offsets

    @property
    def active_highwaters(self) -> MutableMapping[TP, int]:
        """tp -> the changelog offset recovery must reach (the partition's end offset minus one)."""
        highwaters: MutableMapping[TP, int] = self._recovery.active_highwaters
        return highwaters

    def wake(self, event: Any) -> Awaitable[None]:
        """Puts an event on the queue the recovery loop waits on (it checks then whether it is done)."""
        put: Awaitable[None] = self._tables.changelog_queue.put(event)
        return put


def aiokafka_producer(app: Any) -> Any:
    """aiokafka's producer under Faust's (None until started). Faust's commit flushes it first."""
    return getattr(app.producer, "_producer", None)


def keyed_partitions(producer: Any, topic: str) -> Callable[[bytes | None], int]:
    """key -> the partition of `topic` that the aiokafka producer's send() would choose for it: its
    own partitioner over the topic's partitions as its metadata lists them (AIOKafkaProducer._partition).
    Call once the topic's metadata is known (`await producer.partitions_for(topic)`)."""
    metadata = producer._metadata
    all_partitions = list(metadata.partitions_for_topic(topic))
    available = list(metadata.available_partitions_for_topic(topic))
    partitioner = producer._partitioner

    def partition(key: bytes | None) -> int:
        p: int = partitioner(key, all_partitions, available)
        return p

    return partition


def transactional_producer(
    app: Any, transactional_id: str, transaction_timeout_s: float, membership: GroupMetadata
) -> Any:
    """A new (not started) aiokafka producer with the settings of Faust's own (brokers, credentials,
    batch size, linger, partitioner), a transactional id and a transaction timeout, that commits
    offsets with the group membership `membership()` gives (commit_offsets_with_group_metadata)."""
    from aiokafka import AIOKafkaProducer

    faust_producer = app.producer
    settings = {
        **faust_producer._settings_default(),
        **faust_producer._settings_auth(),
        **faust_producer._settings_extra(),
    }
    settings.pop("api_version", None)  # deprecated no-op in aiokafka 0.14
    producer = AIOKafkaProducer(
        **settings,
        transactional_id=transactional_id,
        transaction_timeout_ms=int(transaction_timeout_s * 1000),
    )
    commit_offsets_with_group_metadata(producer, membership)
    return producer


async def wait_for_producer_id(producer: Any) -> None:
    """Until a started transactional producer holds its producer id and epoch. Getting them
    (InitProducerId) is what fences an older producer with the same transactional id and aborts its
    open transaction; aiokafka does it in the background and waits for it only at the first
    begin_transaction."""
    await producer._txn_manager.wait_for_pid()


# Answers to TxnOffsetCommit v3 meaning that the worker is no longer the member, or not in the
# generation, that owns the partitions: the transaction must not commit.
GROUP_MOVED_ON = {22: "ILLEGAL_GENERATION", 25: "UNKNOWN_MEMBER_ID", 82: "FENCED_INSTANCE_ID"}


class GroupMovedOn(Exception):
    """The group coordinator refused a transaction's offsets: the worker lost its partitions."""


GroupMetadata = Callable[[], tuple[int, str, "str | None"]]


def aiokafka_membership(consumer: Any) -> tuple[int, str, str | None]:
    """An aiokafka consumer's group membership now (generation, member id, group instance id)."""
    coordinator = consumer._coordinator
    return int(coordinator.generation), str(coordinator.member_id), coordinator._group_instance_id


def commit_offsets_with_group_metadata(producer: Any, metadata: GroupMetadata) -> None:
    """Makes a transactional producer send its transactions' offsets with TxnOffsetCommit version 3,
    carrying `metadata()` at the time of sending (KIP-447; kafka.kip447). An answer that the group moved
    on fails the transaction with GroupMovedOn (`send_offsets_to_transaction` raises it), as Kafka's
    Java producer does with CommitFailedException; aiokafka's version-0 handler would raise it out of the
    producer's background task instead."""
    from aiokafka.client import CoordinationType
    from aiokafka.errors import GroupAuthorizationFailedError
    from aiokafka.producer import sender as aiokafka_sender

    from upsell_triggers.runtime.kafka.kip447 import TxnOffsetCommitV3, txn_offset_commit_errors

    class GroupTxnOffsetCommitHandler(aiokafka_sender.TxnOffsetCommitHandler):  # type: ignore[misc]
        def create_request(self) -> Any:
            txn = self._sender._txn_manager
            offsets: dict[str, list[tuple[int, int, str]]] = {}
            for tp, meta in sorted(self._offsets.items()):
                offsets.setdefault(tp.topic, []).append((tp.partition, meta.offset, meta.metadata))
            generation, member_id, instance_id = metadata()
            return TxnOffsetCommitV3(
                txn.transactional_id,
                self._group_id,
                txn.producer_id,
                txn.producer_epoch,
                generation,
                member_id,
                offsets,
                instance_id,
            )

        def handle_response(self, resp: Any) -> Any:
            errors = txn_offset_commit_errors(resp)
            for topic, partitions in errors:
                for partition, code in partitions:
                    if code in GROUP_MOVED_ON:
                        exc = GroupMovedOn(
                            f"the consumer group refused the offsets of {topic}[{partition}] "
                            f"({GROUP_MOVED_ON[code]}): this worker no longer owns them"
                        )
                        _fail_transaction(self._sender._txn_manager, exc)
                        return None
            return super().handle_response(_V0Errors(errors))

    snd = producer._sender

    async def _do_txn_offset_commit(offsets: Any, group_id: str) -> None:
        if not offsets:
            return
        generation, member_id, _ = metadata()
        if generation < 0 or not member_id:
            # aiokafka resets its membership once it learns the group removed it, and the broker
            # commits transactional offsets of generation -1 without any check.
            _fail_transaction(
                snd._txn_manager, GroupMovedOn("this worker is not a member of the consumer group")
            )
            return
        try:
            node_id = await snd._find_coordinator(CoordinationType.GROUP, group_id)
        except GroupAuthorizationFailedError as exc:
            snd._txn_manager.error_transaction(exc)
            return
        await GroupTxnOffsetCommitHandler(snd, offsets, group_id).do(node_id)

    snd._do_txn_offset_commit = _do_txn_offset_commit


def _fail_transaction(txn: Any, exc: Exception) -> None:
    """Fails the open transaction with `exc`, which `send_offsets_to_transaction` raises; the same
    exception set on the transaction's end waiter is marked retrieved (nothing else awaits it)."""
    txn.error_transaction(exc)
    txn.wait_for_transaction_end().exception()


class _V0Errors:
    """A version 3 answer in the shape aiokafka's version 0 handler reads."""

    __slots__ = ("errors",)

    def __init__(self, errors: Any) -> None:
        self.errors = errors


def set_transaction_retry_backoff(seconds: float) -> float:
    """How long a transactional producer of this process waits before it asks again to add partitions
    to a new transaction that the broker refused with CONCURRENT_TRANSACTIONS; returns the previous
    value. The broker refuses while it still writes the previous transaction's commit markers
    (KAFKA-5477), a few milliseconds, so a producer whose transactions follow each other (a busy
    worker's partition) meets it at nearly every transaction; aiokafka waits a fixed 20 ms, a module
    constant, which is most of what such a transaction takes. Only AddPartitionsToTxn, the first
    coordinator request of a transaction with records, retries after it; the other transactional
    requests retry after the producer's retry_backoff_ms. `check(exactly_once=True)` verifies at
    start-up that aiokafka's handler still reads the constant."""
    from aiokafka.producer import sender

    previous = float(sender.BACKOFF_OVERRIDE)
    sender.BACKOFF_OVERRIDE = seconds
    return previous


_retry_watchers: list[Callable[[str, str, float], None]] = []


def watch_retries(on_retry: Callable[[str, str, float], None]) -> None:
    """Calls on_retry(request, error, backoff s) in this process whenever an answer to one of aiokafka's
    producer requests makes it wait and ask again: the transactional requests (AddPartitionsToTxn,
    AddOffsetsToTxn, TxnOffsetCommit, EndTxn, InitProducerId; CONCURRENT_TRANSACTIONS, coordinator
    loading or moved) and Produce (a retriable error per partition, e.g. NOT_ENOUGH_REPLICAS, which a
    3.x broker also answers when it cannot yet verify that a transactional Produce's partition is in
    the transaction). Each such wait is the producer's retry_backoff_ms (100 ms by default) except
    AddPartitionsToTxn's first CONCURRENT_TRANSACTIONS of a transaction (set_transaction_retry_backoff):
    one of them is as long as a slow batch. Produce is told once per partition's batch retried. For
    benchmarks and batch timings; aiokafka's handlers are wrapped once, whatever the number of
    watchers."""
    if not _retry_watchers:
        _wrap_retry_handlers()
    _retry_watchers.append(on_retry)


def _error_names(resp: Any) -> str:
    """The error names in a response (a top-level error_code, or per topic and partition)."""
    from aiokafka import errors

    codes: set[int] = set()
    code = getattr(resp, "error_code", None)
    if code:
        codes.add(code)
    for _, partitions in getattr(resp, "errors", None) or ():
        for partition in partitions:
            if partition[1]:
                codes.add(partition[1])
    return ",".join(sorted(errors.for_code(c).__name__ for c in codes)) or "none"


def _wrap_retry_handlers() -> None:
    from aiokafka.producer import sender

    def tell(request: str, error: str, backoff: float) -> None:
        for watcher in _retry_watchers:
            watcher(request, error, backoff)

    for handler in (
        sender.AddPartitionsToTxnHandler,
        sender.AddOffsetsToTxnHandler,
        sender.TxnOffsetCommitHandler,
        sender.EndTxnHandler,
        sender.InitPIDHandler,
    ):
        handle = handler.handle_response
        name = handler.__name__.removesuffix("Handler")

        def _handle_response(self: Any, resp: Any, handle: Any = handle, name: str = name) -> Any:
            backoff = handle(self, resp)
            if backoff is not None:
                tell(name, _error_names(resp), float(backoff))
            return backoff

        handler.handle_response = _handle_response

    can_retry = sender.SendProduceReqHandler._can_retry

    def _can_retry(self: Any, error: Any, batch: Any) -> bool:
        retry: bool = can_retry(self, error, batch)
        if retry:  # the batch goes back to the queue after the handler's default backoff
            tell("Produce", type(error).__name__, float(self._default_backoff))
        return retry

    sender.SendProduceReqHandler._can_retry = _can_retry


_txn_retries: dict[str, list[float]] | None = None


def count_transaction_retries() -> dict[str, list[float]]:
    """For benchmarks: from now on, per request type of aiokafka's producers in this process, the
    backoff (s) of every answer that made it retry (watch_retries). The returned dict fills as requests
    are answered."""
    global _txn_retries
    if _txn_retries is not None:
        return _txn_retries
    retries: dict[str, list[float]] = {}
    _txn_retries = retries

    def count(request: str, error: str, backoff: float) -> None:
        retries.setdefault(request, []).append(backoff)

    watch_retries(count)
    return retries


def memory_store_data(store: Any) -> dict[bytes, Any]:
    """faust.stores.memory.Store's dict: key -> value bytes (as recovery writes them)."""
    data: dict[bytes, Any] = store.data
    return data


def memory_store_partitions(store: Any) -> MutableMapping[bytes, int]:
    """faust.stores.memory.Store's key -> partition (it drops a revoked partition's keys by it)."""
    partitions: MutableMapping[bytes, int] = store._key_partition
    return partitions


def is_rocksdb(store: Any) -> bool:
    return hasattr(store, "_db_for_partition")


def rocksdb_partition_db(store: Any) -> Callable[[int], Any]:
    """faust.stores.rocksdb.Store's partition -> database (a rocksdict Rdict: get, put)."""
    db_for: Callable[[int], Any] = store._db_for_partition
    return db_for


def rocksdb_key_index(store: Any) -> MutableMapping[bytes, int]:
    """faust.stores.rocksdb.Store's key -> partition cache (it looks keys up there first)."""
    index: MutableMapping[bytes, int] = store._key_index
    return index


def serve_raw_records(raw_topics: set[str]) -> None:
    """Makes aiokafka's fetcher hand on its own record object, not a ConsumerRecord, for the topics in
    `raw_topics` (a set read at each record: topics added later count too). See raw_records."""
    from aiokafka.consumer.fetcher import PartitionRecords

    if getattr(PartitionRecords, "_upsell_raw", False):
        return
    wrap = PartitionRecords._consumer_record

    def _consumer_record(self: Any, tp: Any, record: Any) -> Any:
        if tp.topic in raw_topics and self._key_deserializer is None and self._value_deserializer is None:
            return record
        return wrap(self, tp, record)

    PartitionRecords._consumer_record = _consumer_record
    PartitionRecords._upsell_raw = True


def set_fetch_max_wait(consumer: Any, max_wait_ms: int) -> None:
    """How long the broker may hold a fetch of a started aiokafka consumer that finds nothing."""
    consumer._fetcher._fetch_max_wait_ms = max_wait_ms


def time_fetches(on_fetch: Callable[[float, dict[str, int], bool], None]) -> None:
    """Calls on_fetch(seconds, partitions per topic, whether records came) after each fetch request of
    aiokafka's fetchers in this process (in Faust's consumer thread). For per-batch timings only."""
    from aiokafka.consumer.fetcher import Fetcher

    if getattr(Fetcher, "_upsell_timed", False):
        return
    proc = Fetcher._proc_fetch_request

    async def _proc_fetch_request(self: Any, assignment: Any, node_id: Any, request: Any) -> Any:
        t0 = time.perf_counter()
        result = await proc(self, assignment, node_id, request)
        on_fetch(time.perf_counter() - t0, {topic: len(ps) for topic, ps in request.topics}, bool(result))
        return result

    Fetcher._proc_fetch_request = _proc_fetch_request
    Fetcher._upsell_timed = True


__all__ = [
    "EXACTLY_ONCE_MEMBERS",
    "MEMBERS",
    "ROCKSDB_MEMBERS",
    "ConsumerAdapter",
    "Member",
    "RecoveryView",
    "aiokafka_producer",
    "check",
    "count_transaction_retries",
    "set_transaction_retry_backoff",
    "watch_retries",
]
