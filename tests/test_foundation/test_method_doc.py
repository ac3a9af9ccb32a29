"""The method description lives in the repository: every section reference of the code is a heading of
docs/method.md, and no Python file points at a document or folder outside the repository instead.

Section references are read from comments and docstrings of every ``.py`` file under ``epropnp_det/``,
``tools/``, ``tests/`` and ``configs/``: ``§2.2``, ranges ``§2.8–2.10`` / ``§13.11-13`` (each section of the range
counts) and ``Appendix C``. ``tools/dev/rewrite_method_refs.py`` (which rewrites the old references and therefore
names the patterns it looks for) is the only file left out.
"""
import os
import os.path as osp
import re

import pytest

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
DOC = osp.join(REPO, 'docs', 'method.md')
SCAN_DIRS = ('epropnp_det', 'tools', 'tests', 'configs')
SKIP = {'tools/dev/rewrite_method_refs.py'}

SECTION = '\u00a7'  # spelled as an escape so that this file holds no reference itself
REF_RE = re.compile(SECTION + r'(\d+(?:\.\d+)*)(?:[\u2013-](\d+(?:\.\d+)*))?')
APPENDIX_RE = re.compile(r'\bAppendix ([A-Z])\b')
HEADING_RE = re.compile(r'^#{1,6}\s+(?:' + SECTION + r')?(\d+(?:\.\d+)*)[.\s]')
HEADING_APPENDIX_RE = re.compile(r'^#{1,6}\s+Appendix ([A-Z])\b')
# references into the former out-of-repository method document (its file name, its folder, or the word that
# introduced its sections), and paths that leave the repository; bracketed letters keep this file from matching
# itself
OUTSIDE_RE = re.compile(r'epropnp_det_sp[e]c|\.\./shar[e]d|shared/referenc[e]|\b[Ss]p[e]c\s+(?:#\s*)?(?:' + SECTION
                        + r'|Appendix\b)')


def expand_range(first, last):
    """``('2.8', '2.10')`` -> 2.8, 2.9, 2.10; ``('13.11', '13')`` -> 13.11, 13.12, 13.13; no range -> itself."""
    if last is None:
        return [first]
    head, _, tail = first.rpartition('.')
    if '.' not in last and head:
        last = f'{head}.{last}'
    lhead, _, ltail = last.rpartition('.')
    assert lhead == head and int(ltail) >= int(tail), f'unreadable range {first}-{last}'
    return [f'{head}.{k}' if head else str(k) for k in range(int(tail), int(ltail) + 1)]


def py_files():
    for d in SCAN_DIRS:
        for base, subdirs, files in os.walk(osp.join(REPO, d)):
            subdirs[:] = [s for s in subdirs if not s.startswith('.') and s != '__pycache__']
            for name in files:
                rel = osp.relpath(osp.join(base, name), REPO).replace(os.sep, '/')
                if name.endswith('.py') and rel not in SKIP:
                    yield rel


def read(rel):
    with open(osp.join(REPO, rel), encoding='utf-8') as f:
        return f.read()


def read_headings(path):
    """Section numbers ('2.10') and appendix names ('Appendix C') that are Markdown headings of ``path``."""
    out = set()
    with open(path, encoding='utf-8') as f:
        for line in f:
            m = HEADING_RE.match(line)
            if m:
                out.add(m.group(1))
            m = HEADING_APPENDIX_RE.match(line)
            if m:
                out.add('Appendix ' + m.group(1))
    return out


@pytest.fixture(scope='module')
def headings():
    assert osp.exists(DOC), 'docs/method.md is missing'
    return read_headings(DOC)


def test_expand_range():
    assert expand_range('2.8', '2.10') == ['2.8', '2.9', '2.10']
    assert expand_range('13.11', '13') == ['13.11', '13.12', '13.13']
    assert expand_range('10.1', '10.5') == ['10.1', '10.2', '10.3', '10.4', '10.5']
    assert expand_range('5.6', None) == ['5.6']


def test_heading_parser_reads_numbered_and_appendix_headings(tmp_path):
    doc = tmp_path / 'm.md'
    doc.write_text('# Title\n## 2. PnP\n### 2.10 Six DoF\n#### ' + SECTION + '13.4 Loss offset\n'
                   '## Appendix C. Across RoIs\ntext 2.11 not a heading\n', encoding='utf-8')
    assert read_headings(str(doc)) == {'2', '2.10', '13.4', 'Appendix C'}


def test_every_section_reference_is_a_heading(headings):
    missing = []
    n_refs = 0
    for rel in py_files():
        text = read(rel)
        for m in REF_RE.finditer(text):
            n_refs += 1
            for sec in expand_range(m.group(1), m.group(2)):
                if sec not in headings:
                    line = text.count('\n', 0, m.start()) + 1
                    missing.append(f'{rel}:{line}: {m.group(0)} ({sec})')
        if SECTION in text:     # an appendix of the method description, not of some other document
            for m in APPENDIX_RE.finditer(text):
                n_refs += 1
                if 'Appendix ' + m.group(1) not in headings:
                    line = text.count('\n', 0, m.start()) + 1
                    missing.append(f'{rel}:{line}: {m.group(0)}')
    assert n_refs > 100, f'only {n_refs} references found: is the scan looking in the right place?'
    assert not missing, 'references without a heading in docs/method.md:\n' + '\n'.join(missing)


def test_no_reference_leaves_the_repository():
    found = []
    for rel in py_files():
        for k, line in enumerate(read(rel).split('\n'), 1):
            for m in OUTSIDE_RE.finditer(line):
                found.append(f'{rel}:{k}: {m.group(0)!r}')
    # a reference split over two comment lines (the old word at a line end, the section on the next) is caught on
    # the joined text
    for rel in py_files():
        for m in re.finditer(r'\b[Ss]p[e]c\s*\n\s*#?\s*' + SECTION, read(rel)):
            found.append(f'{rel}: {m.group(0)!r}')
    assert not found, 'point these at docs/method.md instead:\n' + '\n'.join(found)


# ---------------------------------------------------------------------------------------------------------------------
# the rewrite tool (tools/dev/rewrite_method_refs.py) on hand-written inputs with hand-written expected outputs

def _tool():
    import importlib.util
    spec_ = importlib.util.spec_from_file_location('_rewrite_method_refs',
                                                   osp.join(REPO, 'tools', 'dev', 'rewrite_method_refs.py'))
    mod = importlib.util.module_from_spec(spec_)
    spec_.loader.exec_module(mod)
    return mod


S = SECTION
OLD = 'sp' + 'ec'       # the word that introduced references before the rewrite


@pytest.mark.parametrize('before, after', [
    (f'"""Camera ({OLD} {S}2.2)."""\n', f'"""Camera (docs/method.md {S}2.2)."""\n'),
    (f'# {OLD.title()} {S}4.3: crop\n', f'# docs/method.md {S}4.3: crop\n'),
    (f'# clamp after the division ({S}13.12).\n', f'# clamp after the division (docs/method.md {S}13.12).\n'),
    (f'"""Boxes ({OLD} {S}0.1, {S}0.2, {S}4.2)."""\n', f'"""Boxes (docs/method.md {S}0.1, {S}0.2, {S}4.2)."""\n'),
    (f'"""Proposals ({OLD} {S}2.8–2.10)."""\n', f'"""Proposals (docs/method.md {S}2.8–2.10)."""\n'),
    (f'"""Across RoIs ({OLD} Appendix C), see {S}5.6."""\n',
     f'"""Across RoIs (docs/method.md Appendix C), see docs/method.md {S}5.6."""\n'),
    (f'"""(this fixes {OLD}\n{S}13.18: the RNG)."""\n', f'"""(this fixes docs/method.md\n{S}13.18: the RNG)."""\n'),
    (f'"""Table ({OLD} {S}10):\n\n{S}10.1   a\n{S}10.2   b\n"""\n',
     f'"""Table (docs/method.md {S}10):\n\n{S}10.1   a\n{S}10.2   b\n"""\n'),
    (f'# already (docs/method.md {S}2.2)\n', f'# already (docs/method.md {S}2.2)\n'),
])
def test_rewrite_examples(before, after):
    tool = _tool()
    new, _ = tool.rewrite_text(before)
    assert new == after
    assert tool.rewrite_text(new)[0] == new     # idempotent


def test_rewrite_wraps_long_lines_without_losing_words():
    tool = _tool()
    words = ' '.join(f'word{k}' for k in range(40))
    src = (f'def f():\n    """Summary ({OLD} {S}2.4) {words}\n    tail of the paragraph.\n\n    Args:\n'
           f'        x: the input.\n    """\n'
           f'    return 1  # trailing comment that is long enough ({S}13.12) {words[:60]}\n')
    new, _ = tool.rewrite_text(src)
    wrapped, unwrapped = tool.wrap_long_lines(src, new, limit=80)
    assert not unwrapped and max(len(line) for line in wrapped.split('\n')) <= 80
    tokens = lambda text: [w for w in text.split() if w != '#']  # noqa: E731
    assert sorted(tokens(wrapped)) == sorted(tokens(new))        # no word lost or added (comment markers aside)
    doc = lambda text: tokens(text.split('Args:')[0])  # noqa: E731
    assert doc(wrapped) == doc(new)                              # the docstring paragraph keeps its word order
    compile(wrapped, 'f.py', 'exec')
    assert '    Args:\n        x: the input.\n' in wrapped    # the Args block is not reflowed into the paragraph
    assert f'docs/method.md {S}2.4' in wrapped and f'docs/method.md {S}13.12' in wrapped
