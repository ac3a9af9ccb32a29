"""README: starts with the two commands, and its PnP snippet is the one tests/test_ops/test_pnp_api.py executes."""
import os
import re

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _read(*parts):
    with open(os.path.join(REPO, *parts)) as f:
        return f.read()


def test_readme_starts_with_main_job_and_tests():
    first_block = re.search(r'```bash\n(.*?)```', _read('README.md'), re.S).group(1).splitlines()
    assert first_block[0].startswith('bash tools/quickstart.sh')
    assert first_block[1].startswith('bash tools/run_tests.sh')
    assert 'bash tools/run_tests.sh' in _read('.ci', 'run')


def test_readme_pnp_snippet_is_the_tested_one():
    section = _read('README.md').split('## Use the EPro-PnP layer in your own model', 1)[1]
    readme_snippet = re.search(r'```python\n(.*?)```', section, re.S).group(1)
    doc_snippet = re.search(r'```python\n(.*?)```', _read('docs', 'pnp_layer.md'), re.S).group(1)
    assert readme_snippet == doc_snippet
