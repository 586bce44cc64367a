import { z } from 'zod'
import { MAX_NAME_CHARS } from './limits.js'
import { SHA256_HEX } from './encoding.js'

/**
 * Detection rules say whether the software is installed. The agent checks
 * the rule before an install (already installed: nothing to do) and after it
 * (the install succeeded only if the rule now holds).
 */
export const fileDetectionSchema = z.object({
  type: z.literal('file'),
  /** Absolute path, resolved under the agent's install root. */
  path: z.string().min(1).max(1024).regex(/^\//, 'must be an absolute path'),
  sha256: z.string().regex(SHA256_HEX).optional()
}).strict()

export const commandDetectionSchema = z.object({
  type: z.literal('command'),
  /** Program and arguments, run without a shell; installed when it exits 0. */
  command: z.array(z.string().min(1).max(4096)).min(1).max(64),
  timeoutSeconds: z.number().int().min(1).max(600).optional()
}).strict()

export const detectionRuleSchema = z.discriminatedUnion('type', [
  fileDetectionSchema,
  commandDetectionSchema
])

export type DetectionRule = z.infer<typeof detectionRuleSchema>

export const nameSchema = z.string().trim().min(1).max(MAX_NAME_CHARS)
