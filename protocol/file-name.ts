/** File names are labels only; they never become paths. Keeps the last path segment without control characters. */
export function sanitizeFileName (name: string): string {
  const base = name.split(/[\\/]/).pop() ?? ''
  // eslint-disable-next-line no-control-regex
  const cleaned = base.replace(/[\u0000-\u001f\u007f]/g, '').trim().slice(0, 255)
  return cleaned === '' || cleaned === '.' || cleaned === '..' ? 'package' : cleaned
}
