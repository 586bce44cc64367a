import type { PoolClient } from 'pg'

/**
 * The schema's versions, oldest first: each is applied once, in its own
 * transaction, and recorded in `meshdeploy_schema`. A version is never
 * edited once released; a change is a new version.
 *
 * Keys compare byte by byte (`COLLATE "C"`), which is the order level keeps,
 * so that pages, prefixes and cursors mean the same on both backends.
 */
export const MIGRATIONS: ReadonlyArray<{ version: number, description: string, statements: string[] }> = [
  {
    version: 1,
    description: 'items, declared indexes with counts, counters, unique token hashes',
    statements: [
      `CREATE TABLE meshdeploy_items (
        collection text COLLATE "C" NOT NULL,
        key text COLLATE "C" NOT NULL,
        value json NOT NULL,
        PRIMARY KEY (collection, key)
      )`,
      `CREATE TABLE meshdeploy_index_entries (
        collection text COLLATE "C" NOT NULL,
        index_name text COLLATE "C" NOT NULL,
        term text COLLATE "C" NOT NULL,
        key text COLLATE "C" NOT NULL,
        PRIMARY KEY (collection, index_name, term, key)
      )`,
      `CREATE TABLE meshdeploy_index_counts (
        collection text COLLATE "C" NOT NULL,
        index_name text COLLATE "C" NOT NULL,
        term text COLLATE "C" NOT NULL,
        count bigint NOT NULL,
        PRIMARY KEY (collection, index_name, term)
      )`,
      `CREATE TABLE meshdeploy_counters (
        name text COLLATE "C" PRIMARY KEY,
        value double precision NOT NULL
      )`,
      `CREATE TABLE meshdeploy_settings (
        name text COLLATE "C" PRIMARY KEY,
        value text NOT NULL
      )`,
      // A secret's hash names one token: two tokens with the same hash would authenticate as either.
      `CREATE UNIQUE INDEX meshdeploy_operator_token_hash ON meshdeploy_items ((value->>'hash')) WHERE collection = 'operatorTokens'`,
      `CREATE UNIQUE INDEX meshdeploy_enrollment_token_hash ON meshdeploy_items ((value->>'hash')) WHERE collection = 'enrollmentTokens'`
      // One package per id, and one status record per (task, device, revision, attempt, seq), are
      // the items' primary key: the status log's key is made of exactly those fields.
    ]
  }
]

/** The newest schema version this build knows. */
export const SCHEMA_VERSION = MIGRATIONS[MIGRATIONS.length - 1].version

/** The database holds a schema newer than this build knows: a newer coordinator migrated it. */
export class SchemaTooNewError extends Error {
  readonly databaseVersion: number
  readonly knownVersion: number
  constructor (databaseVersion: number, knownVersion: number) {
    super(`the database's schema is version ${databaseVersion}, newer than this coordinator knows (${knownVersion}): upgrade the coordinator, or point it at another database`)
    this.name = 'SchemaTooNewError'
    this.databaseVersion = databaseVersion
    this.knownVersion = knownVersion
  }
}

/** Advisory lock classes (the first key of pg_advisory_*lock(int, int)): one per purpose. */
export const LOCK_CLASS = {
  migration: 0x6d64_0001,
  item: 0x6d64_0002,
  leader: 0x6d64_0003
} as const

/**
 * Brings the schema to SCHEMA_VERSION. Coordinators starting together
 * serialise on an advisory lock; the one that comes second finds the work done.
 */
export async function migrate (client: PoolClient): Promise<{ from: number, to: number }> {
  await client.query('BEGIN')
  try {
    await client.query('SELECT pg_advisory_xact_lock($1, 0)', [LOCK_CLASS.migration])
    await client.query(`CREATE TABLE IF NOT EXISTS meshdeploy_schema (
      version integer PRIMARY KEY,
      description text NOT NULL,
      applied_at timestamptz NOT NULL DEFAULT now()
    )`)
    const { rows } = await client.query<{ version: number | null }>('SELECT max(version) AS version FROM meshdeploy_schema')
    const from = rows[0].version ?? 0
    if (from > SCHEMA_VERSION) throw new SchemaTooNewError(from, SCHEMA_VERSION)
    for (const migration of MIGRATIONS) {
      if (migration.version <= from) continue
      for (const statement of migration.statements) await client.query(statement)
      await client.query('INSERT INTO meshdeploy_schema (version, description) VALUES ($1, $2)', [migration.version, migration.description])
    }
    await client.query('COMMIT')
    return { from, to: Math.max(from, SCHEMA_VERSION) }
  } catch (error) {
    await client.query('ROLLBACK').catch(() => {})
    throw error
  }
}
