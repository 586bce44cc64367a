// Message catalogues (i18n/<language>.json) and locale-aware formatting.

/** Languages with a catalogue; English is the fallback for missing keys. */
export const LANGUAGES = [
  { code: 'en', name: 'English' },
  { code: 'zh', name: '中文' },
  { code: 'ja', name: '日本語' },
  { code: 'de', name: 'Deutsch' }
]
const STORAGE_KEY = 'meshdeploy.language'

/** @type {Record<string, any>} */
let catalogue = {}
/** @type {Record<string, any>} */
let fallback = {}
let language = 'en'
/** @type {Intl.PluralRules} */
let plurals = new Intl.PluralRules('en')

/** @param {string} code */
async function fetchCatalogue (code) {
  const response = await fetch(`/console/i18n/${code}.json`, { headers: { accept: 'application/json' } })
  if (!response.ok) throw new Error(`no catalogue for ${code}`)
  return await response.json()
}

/** The language to start in: chosen earlier in this session, else the browser's first supported one. */
export function preferredLanguage () {
  const chosen = sessionStorage.getItem(STORAGE_KEY)
  if (chosen !== null && LANGUAGES.some(entry => entry.code === chosen)) return chosen
  for (const wanted of navigator.languages ?? [navigator.language]) {
    const base = wanted.toLowerCase().split('-')[0]
    if (LANGUAGES.some(entry => entry.code === base)) return base
  }
  return 'en'
}

/** @param {string} code @param {{ remember?: boolean }} [options] */
export async function setLanguage (code, options = {}) {
  fallback = Object.keys(fallback).length > 0 ? fallback : await fetchCatalogue('en')
  catalogue = code === 'en' ? fallback : await fetchCatalogue(code)
  language = code
  plurals = new Intl.PluralRules(locale())
  document.documentElement.lang = locale()
  if (options.remember === true) sessionStorage.setItem(STORAGE_KEY, code)
}

export function currentLanguage () {
  return language
}

/** The BCP 47 tag for Intl and the lang attribute. */
export function locale () {
  return language === 'zh' ? 'zh-CN' : language
}

/**
 * A message by key with `{name}` placeholders. A message may be an object of
 * plural forms (`one`, `other`, …) chosen by `params.count`.
 * @param {string} key
 * @param {Record<string, any>} [params]
 * @returns {string}
 */
export function t (key, params = {}) {
  let message = catalogue[key] ?? fallback[key]
  if (message === undefined) return key
  if (typeof message === 'object') message = message[plurals.select(Number(params.count ?? 0))] ?? message.other
  return String(message).replace(/\{(\w+)\}/g, (whole, name) => name in params ? String(params[name]) : whole)
}

/** Whether a catalogue has a message for the key (field labels fall back to the API's description). @param {string} key */
export function has (key) {
  return key in catalogue || key in fallback
}

const BYTE_UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB']

/** @param {number} bytes */
export function formatBytes (bytes) {
  let value = bytes
  let unit = 0
  while (Math.abs(value) >= 1024 && unit < BYTE_UNITS.length - 1) {
    value /= 1024
    unit += 1
  }
  const digits = unit === 0 || value >= 100 ? 0 : 1
  return `${new Intl.NumberFormat(locale(), { maximumFractionDigits: digits, minimumFractionDigits: digits }).format(value)} ${BYTE_UNITS[unit]}`
}

/** @param {number} value */
export function formatNumber (value) {
  return new Intl.NumberFormat(locale()).format(value)
}

/** @param {number} fraction 0…1 */
export function formatPercent (fraction) {
  return new Intl.NumberFormat(locale(), { style: 'percent', maximumFractionDigits: 0 }).format(fraction)
}

/** @param {string | undefined} iso */
export function formatDateTime (iso) {
  if (iso === undefined || iso === null || iso === '') return '—'
  return new Intl.DateTimeFormat(locale(), { dateStyle: 'medium', timeStyle: 'medium' }).format(new Date(iso))
}

/** "3 minutes ago", from an ISO time. @param {string | undefined} iso @param {number} [nowMs] */
export function formatAgo (iso, nowMs = Date.now()) {
  if (iso === undefined || iso === null || iso === '') return t('common.never')
  const seconds = Math.round((Date.parse(iso) - nowMs) / 1000)
  const format = new Intl.RelativeTimeFormat(locale(), { numeric: 'auto' })
  const steps = /** @type {Array<[Intl.RelativeTimeFormatUnit, number]>} */ ([['second', 60], ['minute', 60], ['hour', 24], ['day', 365], ['year', Infinity]])
  let value = seconds
  for (const [unit, size] of steps) {
    if (Math.abs(value) < size) return format.format(Math.round(value), unit)
    value /= size
  }
  return format.format(Math.round(value), 'year')
}
