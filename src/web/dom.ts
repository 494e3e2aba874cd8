type Child = Node | string | false | null | undefined;

/**
 * Creates an element with properties and children. Text always goes in as text nodes, never as HTML, so
 * values from the server (image names, messages) cannot inject markup.
 */
export function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  props: Partial<Omit<HTMLElementTagNameMap[K], 'style'>> &
    Record<`data-${string}` | `aria-${string}`, string> = {},
  ...children: Child[]
): HTMLElementTagNameMap[K] {
  const element = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key.startsWith('data-') || key.startsWith('aria-')) element.setAttribute(key, String(value));
    else Object.assign(element, { [key]: value });
  }
  for (const child of children) if (child) element.append(child);
  return element;
}

/**
 * Shows `text` in a card's message region (hidden when empty), announced to screen readers: errors
 * assertively, the rest politely.
 */
export function showMessage(element: HTMLElement, text: string, tone: 'info' | 'error' = 'info'): void {
  element.textContent = text;
  element.hidden = text === '';
  element.dataset.tone = tone;
  element.setAttribute('role', tone === 'error' ? 'alert' : 'status');
}

const units = ['bytes', 'KiB', 'MiB', 'GiB', 'TiB'];

/** 1536 → "1.5 KiB": sizes for people, in binary units as disk tools show them. */
export function formatBytes(bytes: number): string {
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return unit === 0 ? `${value} bytes` : `${value.toFixed(value < 10 ? 2 : 1)} ${units[unit]}`;
}
