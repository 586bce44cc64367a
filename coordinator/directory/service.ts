import { EventEmitter } from 'node:events'
import { z } from 'zod'
import { NotFoundError } from '../errors.js'
import type { DeviceRecord, Store, UserRecord, WriteOperation } from '../store/types.js'
import { collect } from '../store/level-store.js'

export const MAX_USERS_PER_IMPORT = 50_000

const text = (max: number): z.ZodOptional<z.ZodString> => z.string().trim().min(1).max(max).optional()

export const userInputSchema = z.object({
  id: z.string().trim().min(1).max(200).regex(/^[^\s/]+$/, 'a user id has no spaces or slashes'),
  displayName: text(200),
  email: text(320),
  department: z.string().trim().min(1).max(500).transform(normalizeDepartment).optional(),
  role: text(200),
  /** Devices the person uses, by device id or host name. */
  devices: z.array(z.string().trim().min(1).max(253)).max(100).optional()
}).strict()

export type UserInput = z.input<typeof userInputSchema>

export const importUsersSchema = z.object({
  users: z.array(userInputSchema).max(MAX_USERS_PER_IMPORT),
  /** Remove the users the list does not name (a full export of the directory). @default false */
  replace: z.boolean().optional()
}).strict()

export type ImportUsersRequest = z.infer<typeof importUsersSchema>

export interface ImportResult {
  created: number
  updated: number
  unchanged: number
  removed: number
  total: number
}

/** `Sales / EMEA/` → `Sales/EMEA`: departments are paths of names. */
export function normalizeDepartment (department: string): string {
  return department.split('/').map(part => part.trim()).filter(part => part !== '').join('/')
}

/** Whether `department` is `target` or one of its sub-departments, without regard to case. */
export function inDepartment (department: string | undefined, target: string): boolean {
  if (department === undefined) return false
  const have = department.toLowerCase()
  const want = normalizeDepartment(target).toLowerCase()
  return want !== '' && (have === want || have.startsWith(want + '/'))
}

function deviceKey (reference: string): string {
  return reference.toLowerCase()
}

function sameUser (a: UserRecord, b: Omit<UserRecord, 'updatedAt'>): boolean {
  return a.displayName === b.displayName && a.email === b.email && a.department === b.department && a.role === b.role &&
    a.devices.length === b.devices.length && a.devices.every((device, index) => device === b.devices[index])
}

/**
 * The people who use the devices, with their department and role, as the
 * organisation's directory knows them. Tasks may target departments and roles;
 * they resolve through the devices assigned to people.
 */
export class DirectoryService extends EventEmitter<{ changed: [] }> {
  private readonly store: Store
  private readonly now: () => number
  private readonly users = new Map<string, UserRecord>()
  /** Lower-cased device id or host name → ids of the people using it. */
  private readonly byDevice = new Map<string, Set<string>>()

  constructor (init: { store: Store, now?: () => number }) {
    super()
    this.store = init.store
    this.now = init.now ?? Date.now
  }

  async open (): Promise<void> {
    for await (const user of this.store.collections.users.values()) this.index(user)
  }

  /** Reads users another coordinator changed (by id). */
  async learn (ids: readonly string[]): Promise<void> {
    const users = await this.store.collections.users.getMany([...ids])
    for (const [at, id] of ids.entries()) {
      const user = users[at]
      if (user === undefined) this.unindex(id)
      else this.index(user)
    }
    this.emit('changed')
  }

  private index (user: UserRecord): void {
    this.unindex(user.id)
    this.users.set(user.id, user)
    for (const device of user.devices) {
      const key = deviceKey(device)
      let ids = this.byDevice.get(key)
      if (ids === undefined) this.byDevice.set(key, ids = new Set())
      ids.add(user.id)
    }
  }

  private unindex (id: string): void {
    const previous = this.users.get(id)
    if (previous === undefined) return
    this.users.delete(id)
    for (const device of previous.devices) {
      const ids = this.byDevice.get(deviceKey(device))
      ids?.delete(id)
      if (ids?.size === 0) this.byDevice.delete(deviceKey(device))
    }
  }

  /** Adds or updates people; with `replace`, removes those the list does not name. */
  async import (request: ImportUsersRequest): Promise<ImportResult> {
    const updatedAt = new Date(this.now()).toISOString()
    const operations: WriteOperation[] = []
    const seen = new Set<string>()
    const result: ImportResult = { created: 0, updated: 0, unchanged: 0, removed: 0, total: 0 }
    const next: UserRecord[] = []
    for (const input of request.users) {
      const id = input.id.toLowerCase()
      if (seen.has(id)) continue
      seen.add(id)
      const candidate: Omit<UserRecord, 'updatedAt'> = { id, devices: [...new Set(input.devices ?? [])] }
      if (input.displayName !== undefined) candidate.displayName = input.displayName
      if (input.email !== undefined) candidate.email = input.email
      if (input.department !== undefined && input.department !== '') candidate.department = input.department
      if (input.role !== undefined) candidate.role = input.role
      const existing = this.users.get(id)
      if (existing !== undefined && sameUser(existing, candidate)) {
        result.unchanged++
        continue
      }
      if (existing === undefined) result.created++
      else result.updated++
      const record: UserRecord = { ...candidate, updatedAt }
      next.push(record)
      operations.push({ type: 'put', collection: 'users', key: id, value: record })
    }
    const removed: string[] = []
    if (request.replace === true) {
      for (const id of this.users.keys()) {
        if (seen.has(id)) continue
        removed.push(id)
        operations.push({ type: 'del', collection: 'users', key: id })
      }
    }
    await this.store.write(operations)
    for (const record of next) this.index(record)
    for (const id of removed) this.unindex(id)
    result.removed = removed.length
    result.total = this.users.size
    if (operations.length > 0) this.emit('changed')
    return result
  }

  list (): UserRecord[] {
    return [...this.users.values()].sort((a, b) => a.id.localeCompare(b.id))
  }

  get (id: string): UserRecord {
    const user = this.users.get(id.toLowerCase())
    if (user === undefined) throw new NotFoundError('user', id)
    return user
  }

  async remove (id: string): Promise<UserRecord> {
    const user = this.get(id)
    await this.store.write([{ type: 'del', collection: 'users', key: user.id }])
    this.unindex(user.id)
    this.emit('changed')
    return user
  }

  /** The people using a device, found by its id or its host name. */
  usersOf (device: Pick<DeviceRecord, 'id' | 'hostname'>): UserRecord[] {
    const ids = new Set([...(this.byDevice.get(deviceKey(device.id)) ?? []), ...(this.byDevice.get(deviceKey(device.hostname)) ?? [])])
    return [...ids].map(id => this.users.get(id)).filter((user): user is UserRecord => user !== undefined)
  }

  /** For tests and tooling: every user as stored. */
  async stored (): Promise<UserRecord[]> {
    return await collect(this.store.collections.users.values())
  }
}
