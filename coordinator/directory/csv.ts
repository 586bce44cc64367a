import type { UserInput } from './service.js'

/** A CSV file that cannot be read as a user list. */
export class CsvError extends Error {
  readonly line: number
  constructor (line: number, message: string) {
    super(`line ${line}: ${message}`)
    this.name = 'CsvError'
    this.line = line
  }
}

/** Splits CSV text (RFC 4180: quoted fields, doubled quotes, CRLF or LF) into rows with their line numbers. */
export function parseCsv (text: string): Array<{ line: number, fields: string[] }> {
  const rows: Array<{ line: number, fields: string[] }> = []
  let fields: string[] = []
  let field = ''
  let quoted = false
  let line = 1
  let rowLine = 1
  let touched = false
  const body = text.startsWith('\ufeff') ? text.slice(1) : text
  for (let index = 0; index < body.length; index++) {
    const char = body[index]
    if (quoted) {
      if (char === '"' && body[index + 1] === '"') {
        field += '"'
        index++
      } else if (char === '"') {
        quoted = false
      } else {
        if (char === '\n') line++
        field += char
      }
      continue
    }
    if (char === '"' && field === '') {
      quoted = true
      touched = true
    } else if (char === ',') {
      fields.push(field)
      field = ''
      touched = true
    } else if (char === '\n' || char === '\r') {
      if (char === '\r' && body[index + 1] === '\n') index++
      fields.push(field)
      if (touched || fields.some(value => value !== '')) rows.push({ line: rowLine, fields })
      fields = []
      field = ''
      touched = false
      line++
      rowLine = line
    } else {
      field += char
      touched = true
    }
  }
  if (quoted) throw new CsvError(rowLine, 'a quoted field is not closed')
  fields.push(field)
  if (touched || fields.some(value => value !== '')) rows.push({ line: rowLine, fields })
  return rows
}

const COLUMNS: Record<string, keyof UserInput> = {
  id: 'id', user: 'id', username: 'id', login: 'id',
  name: 'displayName', displayname: 'displayName', 'display name': 'displayName',
  email: 'email', mail: 'email',
  department: 'department', dept: 'department',
  role: 'role', title: 'role',
  devices: 'devices', device: 'devices', hostnames: 'devices', hostname: 'devices'
}

/**
 * Reads a user list exported from a directory: a header line naming the
 * columns (id, name, email, department, role, devices — in any order,
 * unknown columns refused), one person per line, devices separated by `;`.
 */
export function parseUsersCsv (text: string): UserInput[] {
  const rows = parseCsv(text)
  if (rows.length === 0) throw new CsvError(1, 'the file is empty; the first line names the columns (id,name,email,department,role,devices)')
  const header = rows[0].fields.map(name => name.trim().toLowerCase())
  const columns = header.map((name, index) => {
    const field = COLUMNS[name]
    if (field === undefined) throw new CsvError(rows[0].line, `unknown column ${JSON.stringify(rows[0].fields[index])}; known: id, name, email, department, role, devices`)
    return field
  })
  if (!columns.includes('id')) throw new CsvError(rows[0].line, 'the header has no id column')
  return rows.slice(1).map(({ line, fields }) => {
    if (fields.length > columns.length) throw new CsvError(line, `${fields.length} fields but the header names ${columns.length} columns`)
    const user: Record<string, unknown> = {}
    columns.forEach((column, index) => {
      const value = (fields[index] ?? '').trim()
      if (value === '') return
      user[column] = column === 'devices' ? value.split(/[;|]/).map(device => device.trim()).filter(device => device !== '') : value
    })
    if (user.id === undefined) throw new CsvError(line, 'the id is empty')
    return user as unknown as UserInput
  })
}
