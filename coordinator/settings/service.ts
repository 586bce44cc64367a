import { EventEmitter } from 'node:events'
import { z } from 'zod'
import type { Store } from '../store/types.js'

export const settingsSchema = z.object({
  /** Every upload must carry a publisher signature that verifies against a registered publisher key (Feilian's security verification). */
  securityVerification: z.boolean(),
  /** Self-service requests are approved as they arrive, creating their install task at once. */
  autoApproveRequests: z.boolean()
}).strict()

export type Settings = z.infer<typeof settingsSchema>

export const settingsPatchSchema = settingsSchema.partial().strict().refine(patch => Object.keys(patch).length > 0, { message: 'name at least one setting' })

export type SettingsPatch = z.infer<typeof settingsPatchSchema>

export const DEFAULT_SETTINGS: Readonly<Settings> = {
  securityVerification: false,
  autoApproveRequests: false
}

const SETTINGS_KEY = 'settings'

/** Organisation-wide settings, kept in the store and cached. */
export class SettingsService extends EventEmitter<{ changed: [settings: Settings] }> {
  private readonly store: Store
  private current: Settings = { ...DEFAULT_SETTINGS }

  constructor (init: { store: Store }) {
    super()
    this.store = init.store
  }

  async open (): Promise<void> {
    const stored = await this.store.collections.meta.get(SETTINGS_KEY)
    const parsed = settingsSchema.partial().safeParse(stored ?? {})
    this.current = { ...DEFAULT_SETTINGS, ...(parsed.success ? parsed.data : {}) }
  }

  /** Reads the settings again after another coordinator changed them. */
  async reload (): Promise<void> {
    await this.open()
    this.emit('changed', this.get())
  }

  get (): Settings {
    return { ...this.current }
  }

  async update (patch: SettingsPatch): Promise<Settings> {
    const next: Settings = { ...this.current, ...patch }
    await this.store.write([{ type: 'put', collection: 'meta', key: SETTINGS_KEY, value: next }])
    this.current = next
    this.emit('changed', this.get())
    return this.get()
  }
}
