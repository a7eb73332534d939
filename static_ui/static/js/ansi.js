// ANSI colours in log lines, as HTML: the text is escaped first, then SGR sequences
// (ESC [ ... m) become <span> elements with classes; every other escape sequence is dropped.

const ESCAPES = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };

function escapeHtml(text) {
  return text.replace(/[&<>"']/g, (c) => ESCAPES[c]);
}

// CSI sequences (ESC [ params final), OSC sequences (ESC ] ... BEL or ESC \), and two-byte ones.
const SEQUENCE = /\x1b\[([0-9;?]*)([@-~])|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[@-Z\\-_]?/g;

function applyCodes(state, params) {
  const codes = params === "" ? [0] : params.split(";").map((p) => (p === "" ? 0 : Number(p)));
  for (let i = 0; i < codes.length; i++) {
    const code = codes[i];
    if (code === 0) Object.assign(state, { fg: null, bg: null, bold: false, dim: false, italic: false, underline: false });
    else if (code === 1) state.bold = true;
    else if (code === 2) state.dim = true;
    else if (code === 3) state.italic = true;
    else if (code === 4) state.underline = true;
    else if (code === 22) state.bold = state.dim = false;
    else if (code === 23) state.italic = false;
    else if (code === 24) state.underline = false;
    else if (code >= 30 && code <= 37) state.fg = code - 30;
    else if (code >= 90 && code <= 97) state.fg = code - 90 + 8;
    else if (code === 39) state.fg = null;
    else if (code >= 40 && code <= 47) state.bg = code - 40;
    else if (code >= 100 && code <= 107) state.bg = code - 100 + 8;
    else if (code === 49) state.bg = null;
    else if (code === 38 || code === 48) {
      // 256 colours (5;n): the first 16 map to our palette; true colour (2;r;g;b) is skipped.
      const mode = codes[i + 1];
      if (mode === 5) {
        const n = codes[i + 2];
        if (n < 16) state[code === 38 ? "fg" : "bg"] = n;
        i += 2;
      } else if (mode === 2) {
        i += 4;
      }
    }
  }
}

function classesOf(state) {
  const classes = [];
  if (state.fg !== null) classes.push(`ansi-fg-${state.fg}`);
  if (state.bg !== null) classes.push(`ansi-bg-${state.bg}`);
  if (state.bold) classes.push("ansi-bold");
  if (state.dim) classes.push("ansi-dim");
  if (state.italic) classes.push("ansi-italic");
  if (state.underline) classes.push("ansi-underline");
  return classes.join(" ");
}

/** One line (or more) of log text as safe HTML. */
export function ansiToHtml(text) {
  const state = { fg: null, bg: null, bold: false, dim: false, italic: false, underline: false };
  let html = "";
  let last = 0;
  let open = "";
  const flush = (end) => {
    if (end > last) {
      const piece = escapeHtml(text.slice(last, end));
      html += open ? `<span class="${open}">${piece}</span>` : piece;
    }
  };
  for (const match of text.matchAll(SEQUENCE)) {
    flush(match.index);
    last = match.index + match[0].length;
    if (match[2] === "m") {
      applyCodes(state, match[1]);
      open = classesOf(state);
    }
  }
  flush(text.length);
  return html;
}
