/** Limits shared by the coordinator and the agents. Every input has a bound. */

export const KIB = 1024
export const MIB = 1024 * KIB
export const GIB = 1024 * MIB

/** Default size of a package chunk. */
export const DEFAULT_CHUNK_SIZE_BYTES = 1 * MIB
/** Smallest and largest chunk size a manifest may declare. */
export const MIN_CHUNK_SIZE_BYTES = 64 * KIB
export const MAX_CHUNK_SIZE_BYTES = 16 * MIB

/** Default and hard upper bound of an uploaded package. */
export const DEFAULT_MAX_PACKAGE_BYTES = 8 * GIB
export const MAX_CHUNKS_PER_PACKAGE = 1_000_000

/** A serialized manifest envelope may not be larger than this. */
export const MAX_MANIFEST_BYTES = 16 * MIB
/** A serialized status record envelope may not be larger than this. */
export const MAX_STATUS_RECORD_BYTES = 16 * KIB
/** Records in one status batch. */
export const MAX_STATUS_BATCH_RECORDS = 1000
/** A JSON request body may not be larger than this. */
export const MAX_JSON_BODY_BYTES = 1 * MIB
/** Strings inside records: messages, output tails. */
export const MAX_MESSAGE_CHARS = 4000
export const MAX_NAME_CHARS = 200
export const MAX_RUN_ARGS = 64
export const MAX_TARGET_ENTRIES = 10_000

/** How long an agent may hold the assignments request open. */
export const MAX_ASSIGNMENT_WAIT_SECONDS = 60

/** Tolerated difference between a device clock and the coordinator clock. */
export const DEFAULT_CLOCK_SKEW_MS = 5 * 60 * 1000
/** The largest clock-skew tolerance a verifier accepts: a wider one would let expired manifests live on. */
export const MAX_CLOCK_SKEW_MS = 60 * 60 * 1000

/** Default validity of a task (Feilian: one week). */
export const DEFAULT_TASK_VALIDITY_MS = 7 * 24 * 60 * 60 * 1000

/** Default bound on an installer's run time. */
export const DEFAULT_INSTALL_TIMEOUT_SECONDS = 30 * 60
export const MAX_INSTALL_TIMEOUT_SECONDS = 24 * 60 * 60

/** Bytes of installer output kept for the status record. */
export const OUTPUT_TAIL_BYTES = 2000
