// The console's live connection to GET /v1/events. EventSource cannot send
// an Authorization header, so the stream is read with fetch and parsed here;
// after a cut it resumes with Last-Event-ID, and a `reset` (the missed events
// are no longer kept) tells every view to load its data again.

const MAX_LINE_CHARS = 1024 * 1024
/** The coordinator sends a heartbeat every 15 s; this long without a byte means the stream is dead. */
const IDLE_TIMEOUT_MS = 45_000

/**
 * Splits event-stream text into messages (WHATWG "Server-sent events").
 * @param {(message: { event: string, data: string, id?: string }) => void} onMessage
 */
export function eventStreamParser (onMessage) {
  let buffer = ''
  let event = ''
  /** @type {string[]} */
  let data = []
  /** @type {string | undefined} */
  let id
  let hasFields = false
  /** @param {string} text */
  const line = text => {
    if (text === '') {
      if (hasFields) onMessage({ event: event === '' ? 'message' : event, data: data.join('\n'), ...(id !== undefined ? { id } : {}) })
      event = ''
      data = []
      id = undefined
      hasFields = false
      return
    }
    if (text.startsWith(':')) return
    const colon = text.indexOf(':')
    const field = colon === -1 ? text : text.slice(0, colon)
    const value = colon === -1 ? '' : text.slice(colon + 1).replace(/^ /, '')
    if (field === 'event') event = value
    else if (field === 'data') data.push(value)
    else if (field === 'id' && !value.includes('\0')) id = value
    else return
    hasFields = true
  }
  /** @param {string} chunk */
  return chunk => {
    buffer += chunk
    const parts = buffer.split(/\r\n|\r(?!$)|\n/)
    buffer = parts.pop() ?? ''
    for (const part of parts) line(part)
    if (buffer.length > MAX_LINE_CHARS) throw new Error('an event-stream line is too long')
  }
}

/**
 * @typedef {{ id: number, type: string, at: string, taskId?: string, data: any }} LiveEvent
 * @typedef {'connecting' | 'live' | 'reconnecting' | 'unavailable'} LiveState
 */

export class LiveEvents {
  /** @param {string} token @param {() => void} onUnauthorized */
  constructor (token, onUnauthorized) {
    this.token = token
    this.onUnauthorized = onUnauthorized
    /** @type {string | undefined} */
    this.lastEventId = undefined
    /** @type {Set<(event: LiveEvent) => void>} */
    this.listeners = new Set()
    /** @type {Set<() => void>} */
    this.resetListeners = new Set()
    /** @type {Set<(state: LiveState) => void>} */
    this.stateListeners = new Set()
    /** @type {LiveState} */
    this.state = 'connecting'
    this.stopped = new AbortController()
  }

  /** Calls `listener` with every event; returns the way to stop. @param {(event: LiveEvent) => void} listener */
  subscribe (listener) {
    this.listeners.add(listener)
    return () => { this.listeners.delete(listener) }
  }

  /** Called when events were missed for good: reload. @param {() => void} listener */
  onReset (listener) {
    this.resetListeners.add(listener)
    return () => { this.resetListeners.delete(listener) }
  }

  /** @param {(state: LiveState) => void} listener */
  onState (listener) {
    this.stateListeners.add(listener)
    listener(this.state)
    return () => { this.stateListeners.delete(listener) }
  }

  /** @param {LiveState} state */
  setState (state) {
    if (state === this.state) return
    this.state = state
    for (const listener of this.stateListeners) listener(state)
  }

  stop () {
    this.stopped.abort()
  }

  async run () {
    let failures = 0
    while (!this.stopped.signal.aborted) {
      const attempt = new AbortController()
      const stop = () => { attempt.abort() }
      this.stopped.signal.addEventListener('abort', stop, { once: true })
      /** @type {ReturnType<typeof setTimeout> | undefined} */
      let idle
      const alive = () => {
        clearTimeout(idle)
        idle = setTimeout(() => { attempt.abort() }, IDLE_TIMEOUT_MS)
      }
      try {
        alive()
        /** @type {Record<string, string>} */
        const headers = { accept: 'text/event-stream', authorization: `Bearer ${this.token}` }
        if (this.lastEventId !== undefined) headers['last-event-id'] = this.lastEventId
        const response = await fetch('/v1/events', { headers, signal: attempt.signal, cache: 'no-store', credentials: 'omit' })
        if (response.status === 401) {
          this.setState('unavailable')
          this.onUnauthorized()
          return
        }
        if (!response.ok || response.body === null) {
          // Refusals another attempt cannot change; 429 and 5xx are tried again.
          if (response.status < 500 && response.status !== 429) {
            this.setState('unavailable')
            return
          }
          throw new Error(`HTTP ${response.status}`)
        }
        const reader = response.body.pipeThrough(new TextDecoderStream()).getReader()
        const push = eventStreamParser(message => { this.dispatch(message); failures = 0 })
        for (;;) {
          const { done, value } = await reader.read()
          if (done) break
          alive()
          push(value)
        }
      } catch {
        // Cut, refused or silent for too long: try again below.
      } finally {
        clearTimeout(idle)
        this.stopped.signal.removeEventListener('abort', stop)
      }
      if (this.stopped.signal.aborted) return
      this.setState('reconnecting')
      failures += 1
      await new Promise(resolve => setTimeout(resolve, Math.min(15_000, 1000 * 2 ** Math.min(failures - 1, 4))))
    }
  }

  /** @param {{ event: string, data: string, id?: string }} message */
  dispatch (message) {
    if (message.id !== undefined) this.lastEventId = message.id
    if (message.event === 'ready') {
      this.setState('live')
      return
    }
    if (message.event === 'reset') {
      this.setState('live')
      for (const listener of this.resetListeners) listener()
      return
    }
    let event
    try {
      event = JSON.parse(message.data)
    } catch {
      return
    }
    for (const listener of this.listeners) listener(event)
  }
}

/**
 * Runs `task` at most once per `spacingMs`, however often it is asked for;
 * a request during a run schedules one more run after it.
 * @param {() => Promise<void> | void} task @param {number} spacingMs
 */
export function throttled (task, spacingMs) {
  /** @type {ReturnType<typeof setTimeout> | undefined} */
  let timer
  let lastRun = 0
  let running = false
  let again = false
  const run = async () => {
    timer = undefined
    if (running) {
      again = true
      return
    }
    running = true
    lastRun = Date.now()
    try {
      await task()
    } finally {
      running = false
      if (again) {
        again = false
        schedule()
      }
    }
  }
  const schedule = () => {
    if (timer !== undefined) return
    timer = setTimeout(run, Math.max(0, lastRun + spacingMs - Date.now()))
  }
  return Object.assign(schedule, { cancel: () => { clearTimeout(timer); timer = undefined } })
}
