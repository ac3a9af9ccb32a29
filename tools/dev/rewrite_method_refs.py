"""Point every section reference in the code at ``docs/method.md``; list what needs a hand.

The comments and docstrings of ``epropnp_det/``, ``tools/``, ``tests/`` and ``configs/`` cite sections of the
method description as ``§2.2``, ranges as ``§2.8–2.10`` or ``§13.11-13`` and appendices as ``Appendix C``. This
script rewrites them in place so that each one names the document it points into:

* a reference introduced by the word "spec" (``(spec`` + ``§2.2)``, ``Spec`` + ``§4.1:``): the word becomes
  ``docs/method.md``;
* a bare reference (``(§13.12)``): ``docs/method.md`` is inserted before it;
* a reference that continues a list started by a rewritten one (``§0.1, §0.2``, ``§9 'mc', §10.17``,
  ``§10.6, Appendix F``) and the rows of a table whose lines start with a reference stay as they are: the
  first reference of the list or the table's caption names the document;
* references that already name ``docs/method.md`` are left alone.

A changed line that now exceeds the line length (120) is wrapped when it is a comment or lies in a docstring: the
overflow is poured into the next line of the same paragraph (which is wrapped in turn) or, after a list item, an
"Args:" entry or a colon, gets a line of its own with the right indentation; a trailing comment moves onto its own
line above its code. Other over-long lines are reported. Nothing else is changed, and a second run changes nothing.

The report (stdout) lists, per file and line, what the script cannot decide and a person must fix: mentions of
numbered issues, of the specification file or of folders outside the repository, remaining uses of the word
"spec" in comments and strings, over-long lines it could not wrap, and references to sections that
``docs/method.md`` does not have (when it exists).

Usage::

    python tools/dev/rewrite_method_refs.py              # rewrite the tree in place, print the report
    python tools/dev/rewrite_method_refs.py --dry-run    # print the unified diff and the report, change nothing
    python tools/dev/rewrite_method_refs.py --root /tmp/copy   # work on a copy of the repository

Exit status: 0, or 1 with ``--check`` when any file would change or any item needs a hand.
"""
import argparse
import difflib
import io
import os
import os.path as osp
import re
import sys
import tokenize
from typing import Dict, List, NamedTuple, Optional, Set, Tuple

DOC = 'docs/method.md'
SCAN_DIRS = ('epropnp_det', 'tools', 'tests', 'configs')
LINE_LENGTH = 120
# files that name the patterns they look for: this script and the test that checks the result
SKIP = ('tools/dev/rewrite_method_refs.py', 'tests/test_foundation/test_method_doc.py')

SECTION = '\u00a7'
# §2.2, §2.8–2.10, §13.11-13 (= 13.11 to 13.13), §10.1-10.5
REF_RE = re.compile(SECTION + r'(\d+(?:\.\d+)*)(?:[\u2013-](\d+(?:\.\d+)*))?')
APPENDIX_RE = re.compile(r'\bAppendix ([A-Z])\b')
# the word "spec" (any case of its first letter) right before a reference, possibly across a comment line break
SPEC_BEFORE_RE = re.compile(r"\b([Ss]pec)(\s*\n\s*#\s*|\s+)$")
ALREADY_RE = re.compile(re.escape(DOC) + r'\s+$')
ISSUE_RE = re.compile(r'\bissues?\s*#?\d+', re.IGNORECASE)
OUTSIDE_RE = re.compile(r'epropnp_det_spec|\.\./shared|shared/reference|/work/')
SPEC_WORD_RE = re.compile(r"\b[Ss]pec(?:'s|ification)?\b")
HEADING_RE = re.compile(r'^#{1,6}\s+(?:' + SECTION + r')?(\d+(?:\.\d+)*)[.\s]')
HEADING_APPENDIX_RE = re.compile(r'^#{1,6}\s+Appendix ([A-Z])\b')


class Ref(NamedTuple):
    start: int      # offset of the section sign / of "Appendix"
    end: int
    sections: Tuple[str, ...]


def expand_range(first: str, last: Optional[str]) -> Tuple[str, ...]:
    """Section numbers of ``§first`` or ``§first–last``; ``13.11-13`` is 13.11..13.13, ``10.1-10.5`` likewise.

    >>> expand_range('2.8', '2.10')
    ('2.8', '2.9', '2.10')
    >>> expand_range('13.11', '13')
    ('13.11', '13.12', '13.13')
    """
    if last is None:
        return (first,)
    head, _, tail = first.rpartition('.')
    if '.' not in last and head:
        last = f'{head}.{last}'
    lhead, _, ltail = last.rpartition('.')
    if lhead != head or not tail.isdigit() or not ltail.isdigit() or int(ltail) < int(tail):
        return (first, last)
    return tuple(f'{head}.{k}' if head else str(k) for k in range(int(tail), int(ltail) + 1))


def find_refs(text: str) -> List[Ref]:
    """Every section reference and appendix reference of ``text``, in order of position."""
    refs = [Ref(m.start(), m.end(), expand_range(m.group(1), m.group(2))) for m in REF_RE.finditer(text)]
    refs += [Ref(m.start(), m.end(), ('Appendix ' + m.group(1),)) for m in APPENDIX_RE.finditer(text)]
    return sorted(refs)


def doc_headings(doc_path: str) -> Set[str]:
    """Section numbers ('2.2') and appendix names ('Appendix C') that are headings of the document."""
    out = set()
    with open(doc_path, encoding='utf-8') as f:
        for line in f:
            m = HEADING_RE.match(line) or HEADING_APPENDIX_RE.match(line)
            if m:
                out.add(m.group(1) if m.re is HEADING_RE else 'Appendix ' + m.group(1))
    return out


def _is_continuation(text: str, prev_end: int, start: int) -> bool:
    """True if the reference at ``start`` continues the list of the reference ending at ``prev_end``."""
    if prev_end < 0:
        return False
    gap = text[prev_end:start]
    return (len(gap) <= 40 and not any(c in gap for c in '()[]\n') and '. ' not in gap and ': ' not in gap)


def _line_bounds(text: str, pos: int) -> Tuple[int, int]:
    return text.rfind('\n', 0, pos) + 1, (text.find('\n', pos) + 1 or len(text) + 1) - 1


def _is_table_row(text: str, start: int) -> bool:
    """The reference opens its line and a neighbouring line opens with a reference too (a table of sections)."""
    lo, _ = _line_bounds(text, start)
    if text[lo:start].strip(' \t#'):
        return False
    lines = text.split('\n')
    k = text.count('\n', 0, start)

    def opens_with_ref(j):
        return 0 <= j < len(lines) and lines[j].lstrip(' \t#').startswith((SECTION, 'Appendix '))
    return opens_with_ref(k - 1) or opens_with_ref(k + 1)


def rewrite_text(text: str) -> Tuple[str, int]:
    """Rewrite the references of one file's text; returns (new text, number of references rewritten)."""
    edits: List[Tuple[int, int, str]] = []    # (start, end, replacement), non-overlapping, in order
    prev_end = -1
    for ref in find_refs(text):
        before = text[max(0, ref.start - 40):ref.start]
        if ALREADY_RE.search(before):
            pass
        elif SPEC_BEFORE_RE.search(before):
            m = SPEC_BEFORE_RE.search(before)
            s = ref.start - len(before) + m.start(1)
            edits.append((s, s + len(m.group(1)), DOC))
        elif _is_continuation(text, prev_end, ref.start) or _is_table_row(text, ref.start):
            pass
        elif text[ref.start:ref.start + 9] == 'Appendix ' and not _mentions_spec_appendix(text, ref.start):
            pass
        else:
            edits.append((ref.start, ref.start, DOC + ' '))
        prev_end = ref.end
    out, last = [], 0
    for s, e, rep in edits:
        out.append(text[last:s])
        out.append(rep)
        last = e
    out.append(text[last:])
    return ''.join(out), len(edits)


def _mentions_spec_appendix(text: str, start: int) -> bool:
    """A bare "Appendix X" is rewritten only where it cites the method description (not an unrelated appendix):
    the file must cite ``§`` sections or the spec's appendices elsewhere."""
    return SECTION in text or re.search(r'\b[Ss]pec\s+Appendix', text) is not None


def _string_and_comment_lines(text: str) -> Tuple[Dict[int, Tuple[str, int]], List[Tuple[int, int]]]:
    """Where the prose of a file is.

    Returns ``kinds``: 1-based line number -> (kind, column) for lines that can be wrapped: 'comment' (a
    comment-only line), 'trailing' (code followed by a comment starting at ``column``), 'string' (a line inside
    a multi-line string, or opened by a string, e.g. a one-line docstring); and ``spans``: (start, end) offsets
    in ``text`` of every comment and string token (where the word "spec" is prose, not a variable).
    """
    kinds: Dict[int, Tuple[str, int]] = {}
    spans: List[Tuple[int, int]] = []
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(text).readline))
    except (tokenize.TokenError, SyntaxError, IndentationError):
        return kinds, spans
    lines = text.split('\n')
    starts = [0]
    for line in lines:
        starts.append(starts[-1] + len(line) + 1)
    string_types = {tokenize.STRING}
    if hasattr(tokenize, 'FSTRING_MIDDLE'):
        string_types.add(tokenize.FSTRING_MIDDLE)
    for tok in tokens:
        (r0, c0), (r1, c1) = tok.start, tok.end
        if tok.type == tokenize.COMMENT:
            spans.append((starts[r0 - 1] + c0, starts[r0 - 1] + c1))
            kinds[r0] = ('trailing', c0) if lines[r0 - 1][:c0].strip() else ('comment', c0)
        elif tok.type in string_types:
            spans.append((starts[r0 - 1] + c0, starts[r1 - 1] + c1))
            tail = lines[r1 - 1][c1:].strip()
            for r in range(r0, r1 + 1):
                # the opening line counts only if the string opens it (a docstring), the closing line only if
                # nothing but a comment follows the string
                if (r > r0 or not lines[r0 - 1][:c0].strip()) and (r < r1 or not tail or tail.startswith('#')):
                    kinds.setdefault(r, ('string', 0))
    return kinds, spans


def _split_point(line: str, limit: int) -> int:
    """Index of the space at which to break ``line`` (last one before ``limit`` that does not separate
    ``docs/method.md`` from its reference); -1 if none."""
    indent = len(line) - len(line.lstrip())
    fallback = -1
    for i in range(min(limit, len(line) - 1), indent, -1):
        if line[i] == ' ' and not line[:i].endswith(DOC) and line[i - 1] != ' ' and line[:i].strip(' #'):
            if line.count('``', 0, i) % 2 == 0:
                return i    # not inside an inline ``literal``
            fallback = max(fallback, i)
    return fallback


_ITEM_RE = re.compile(r'^(\*{1,2}|[-*] |>>>|\.\. |[:|=]|"""|\'\'\'|[\w.*`\[\]()]+: |\w+:$)')


def _continuation_indent(line: str, kind: str, nxt: str) -> str:
    """Leading text of the line that continues a wrapped ``line`` of the given kind."""
    indent = line[:len(line) - len(line.lstrip())]
    body = line.lstrip()
    if kind == 'comment':
        marker = '#:' if body.startswith('#:') else '#'      # Sphinx attribute comments continue with '#:'
        after = body[len(marker):]
        text = after.lstrip()
        pad = max(1, len(after) - len(text)) + (2 if text.startswith(('* ', '- ')) else 0)
        return indent + marker + ' ' * pad
    nxt_indent = nxt[:len(nxt) - len(nxt.lstrip())]
    if body.startswith(('"""', "'''")):
        return indent
    if nxt.strip() and len(nxt_indent) > len(indent):
        return nxt_indent
    if body.startswith(('* ', '- ')):
        return indent + '  '
    if len(indent) >= 8 and re.match(r'^\*{0,2}\w+( \([^)]*\))?: ', body):
        return indent + '    '    # an entry of a function's "Args:" block: its text continues indented
    return indent


def _continues_paragraph(nxt: str, nxt_kind: Optional[str], kind: str, cont: str, rest: str) -> bool:
    """True if ``nxt`` is the next line of the paragraph that a line wrapped with prefix ``cont`` belongs to, so the
    overflow ``rest`` can be poured into it instead of getting a short line of its own."""
    if nxt_kind != kind or not nxt.strip() or not nxt.startswith(cont) or nxt[len(cont):len(cont) + 1] in (' ', ''):
        return False
    body = nxt[len(cont):]
    if rest.endswith(DOC) and body.startswith(SECTION):
        return True     # keep a reference together with the document name that introduces it
    # conservative: after a colon, and before a line that looks like the start of an item ("name: ...",
    # "Label (...): ...", a bullet, a table row), the lines stay apart
    label = body.split(': ', 1)[0] if ': ' in body else None
    if label is not None and re.match(r'^[\w.`*-]+( \([^)]*\))?$', label):
        return False    # "Label: ..." or "Label (...): ..."
    return not rest.endswith(':') and _ITEM_RE.match(body) is None


def wrap_long_lines(old: str, new: str, limit: int = LINE_LENGTH) -> Tuple[str, List[int]]:
    """Wrap lines of ``new`` longer than ``limit`` that the rewrite changed; returns the text and the (1-based,
    in the returned text) numbers of changed over-long lines that could not be wrapped.

    Comment lines and lines inside strings are broken at a space; the overflow is poured into the next line when
    that line continues the same paragraph (same prefix, not a list item, parameter or table row), which is then
    wrapped in turn, so paragraphs stay filled. A trailing comment moves onto its own line above its code.
    """
    old_lines = set(old.split('\n'))
    kinds, _ = _string_and_comment_lines(new)
    lines = new.split('\n')
    line_kinds = [kinds.get(k + 1, (None, 0)) for k in range(len(lines))]
    out: List[str] = []
    unwrapped: List[int] = []
    k = 0
    while k < len(lines):
        line = lines[k]
        kind, col = line_kinds[k]
        if len(line) <= limit or line in old_lines:
            out.append(line)
            k += 1
            continue
        indent = line[:len(line) - len(line.lstrip())]
        if kind == 'trailing':
            # the comment moves onto its own line(s) above the code
            lines[k:k + 1] = [indent + line[col:], line[:col].rstrip()]
            line_kinds[k:k + 1] = [('comment', len(indent)), (None, 0)]
            continue
        cut = _split_point(line, limit) if kind else -1
        if cut < 0:
            out.append(line)
            unwrapped.append(len(out))
            k += 1
            continue
        head, rest = line[:cut].rstrip(), line[cut + 1:].lstrip()
        nxt = lines[k + 1] if k + 1 < len(lines) else ''
        cont = _continuation_indent(line, kind, nxt)
        out.append(head)
        if k + 1 < len(lines) and (_continues_paragraph(nxt, line_kinds[k + 1][0], kind, cont, rest)):
            glue = '' if rest.endswith(('(', '[', '{')) else ' '    # a line break inside brackets had no space
            lines[k + 1] = cont + rest + glue + nxt[len(cont):]
            old_lines.discard(lines[k + 1])
        else:
            lines.insert(k + 1, cont + rest)
            line_kinds.insert(k + 1, (kind, 0))
        k += 1
    return '\n'.join(out), unwrapped


def report_items(path: str, text: str, headings: Optional[Set[str]]) -> List[str]:
    """Things in ``text`` (after the rewrite) that a person must fix, as 'path:line: what' strings."""
    items = []
    _, spans = _string_and_comment_lines(text)
    lines = text.split('\n')
    offset = 0
    for k, line in enumerate(lines, 1):
        for m in ISSUE_RE.finditer(line):
            items.append(f'{path}:{k}: mentions "{m.group(0)}" (an issue tracker outside the repository)')
        for m in OUTSIDE_RE.finditer(line):
            items.append(f'{path}:{k}: mentions "{m.group(0)}" (a file outside the repository)')
        for m in SPEC_WORD_RE.finditer(line):
            pos = offset + m.start()
            if any(a <= pos < b for a, b in spans):
                items.append(f'{path}:{k}: the word "{m.group(0)}" (say docs/method.md or reword): '
                             f'{line.strip()[:90]}')
        offset += len(line) + 1
    if headings is not None:
        for ref in find_refs(text):
            missing = [s for s in ref.sections if s not in headings]
            if missing and (SECTION in text[ref.start:ref.end] or _mentions_spec_appendix(text, ref.start)):
                k = text.count('\n', 0, ref.start) + 1
                items.append(f'{path}:{k}: {text[ref.start:ref.end]} has no heading in {DOC}: {missing}')
    return items


def iter_py_files(root: str, dirs=SCAN_DIRS):
    for d in dirs:
        for base, subdirs, files in os.walk(osp.join(root, d)):
            subdirs[:] = sorted(s for s in subdirs if not s.startswith('.') and s != '__pycache__')
            for name in sorted(files):
                if name.endswith('.py'):
                    yield osp.join(base, name)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--root', default=osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))),
                        help='repository root (default: the one holding this script)')
    parser.add_argument('--dry-run', action='store_true', help='print the diff instead of writing the files')
    parser.add_argument('--check', action='store_true',
                        help='exit 1 if a file would change or an item needs a hand (implies --dry-run)')
    parser.add_argument('--quiet-diff', action='store_true', help='with --dry-run: no diff, only statistics')
    args = parser.parse_args(argv)
    dry = args.dry_run or args.check
    root = osp.abspath(args.root)
    doc_path = osp.join(root, DOC)
    headings = doc_headings(doc_path) if osp.exists(doc_path) else None
    n_files = n_refs = 0
    items: List[str] = []
    for path in iter_py_files(root):
        rel = osp.relpath(path, root)
        if rel.replace(os.sep, '/') in SKIP:
            continue
        with open(path, encoding='utf-8') as f:
            text = f.read()
        new, count = rewrite_text(text)
        unwrapped: List[int] = []
        if new != text:
            new, unwrapped = wrap_long_lines(text, new)
        items += [f'{rel}:{k}: longer than {LINE_LENGTH} characters after the rewrite' for k in unwrapped]
        items += report_items(rel, new, headings)
        if new == text:
            continue
        n_files += 1
        n_refs += count
        if dry:
            if not args.quiet_diff:
                sys.stdout.writelines(difflib.unified_diff(text.splitlines(True), new.splitlines(True),
                                                           'a/' + rel, 'b/' + rel))
        else:
            with open(path, 'w', encoding='utf-8') as f:
                f.write(new)
    verb = 'would change' if dry else 'changed'
    print(f'# {verb} {n_refs} references in {n_files} files')
    if headings is None:
        print(f'# {DOC} not found: section numbers not checked')
    print(f'# {len(items)} items to fix by hand' + (':' if items else ''))
    for it in items:
        print(it)
    return 1 if args.check and (n_files or items) else 0


if __name__ == '__main__':
    sys.exit(main())
