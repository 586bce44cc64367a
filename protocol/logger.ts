import { pino, type Logger as PinoLogger, type LevelWithSilent } from 'pino'

export type Logger = PinoLogger
export type LogLevel = LevelWithSilent

/** Structured JSON logs on standard error. */
export function createLogger (level: LogLevel = 'info', name = 'meshdeploy'): Logger {
  return pino({ name, level, base: { pid: process.pid } }, pino.destination({ fd: 2, sync: false }))
}

export function silentLogger (): Logger {
  return pino({ level: 'silent' })
}
