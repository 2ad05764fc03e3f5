"""README.md's test command is what CI runs, and the commands it shows exist."""
import re

from .conftest import REPO


def _test_command():
    readme = (REPO / 'README.md').read_text()
    section = readme.split('## Test (one command)', 1)[1]
    return re.search(r'```bash\n(.+?)\n```', section, re.S).group(1).strip()


def test_ci_runs_exactly_the_readme_test_command():
    ci_lines = [line.strip() for line in (REPO / '.ci' / 'run').read_text().splitlines()]
    assert _test_command() in ci_lines


def test_readme_paths_exist():
    readme = (REPO / 'README.md').read_text()
    for path in re.findall(r'(?:tools|configs|sparx_mm|tests)/[\w/.{},-]+\.(?:py|md|sh)', readme):
        for expanded in _expand_braces(path):
            assert (REPO / expanded).exists(), expanded


def _expand_braces(path):
    match = re.search(r'\{([^}]+)\}', path)
    if not match:
        return [path]
    return [p for option in match.group(1).split(',')
            for p in _expand_braces(path[:match.start()] + option + path[match.end():])]
