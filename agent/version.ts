/** The agent's version: reported at enrollment and by `--version`; the agent packages carry it too. */
export const AGENT_VERSION = '0.1.0'
