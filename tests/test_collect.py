"""`-i` entries -> ordered image list (inputs/collect.py): files, folders, globs, .txt lists, links, errors."""
import os

import pytest

from crop_cluster.inputs.collect import IMAGE_EXTENSIONS, CollectResult, InputError, collect_images, is_image_path


def touch(path, content=b"x"):
    """Create `path` (and its folders) with some bytes; collect only looks at names, never decodes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return str(path)


def write_list(path, lines):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


# --- single files -------------------------------------------------------------------------------------------------

def test_single_file(tmp_path):
    image = touch(tmp_path / "a.jpg")
    result = collect_images([image])
    assert isinstance(result, CollectResult)
    assert result.files == [image]
    assert result.skipped == [] and result.ignored_non_images == 0


def test_single_file_path_is_normalised(tmp_path):
    touch(tmp_path / "sub" / "a.jpg")
    result = collect_images([str(tmp_path / "sub" / ".." / "sub" / "." / "a.jpg")])
    assert result.files == [str(tmp_path / "sub" / "a.jpg")]


def test_entries_keep_given_order(tmp_path):
    b, a, c = touch(tmp_path / "b.jpg"), touch(tmp_path / "a.jpg"), touch(tmp_path / "c.png")
    assert collect_images([b, a, c]).files == [b, a, c]


def test_explicit_non_image_file_is_skipped_with_reason(tmp_path):
    image = touch(tmp_path / "a.jpg")
    other = touch(tmp_path / "notes.csv")
    result = collect_images([other, image])
    assert result.files == [image]
    assert len(result.skipped) == 1
    entry, reason = result.skipped[0]
    assert entry == other
    assert "not a supported image extension" in reason and ".jpg" in reason


def test_relative_entry_from_cwd(tmp_path, monkeypatch):
    touch(tmp_path / "crops" / "a.jpg")
    monkeypatch.chdir(tmp_path)
    assert collect_images(["crops/a.jpg"]).files == [os.path.join("crops", "a.jpg")]


def test_tilde_is_expanded(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    image = touch(tmp_path / "a.jpg")
    assert collect_images(["~/a.jpg"]).files == [image]


@pytest.mark.parametrize("name,expected", [
    ("a.jpg", True), ("a.JPG", True), ("a.Jpeg", True), ("a.png", True), ("a.PNG", True), ("a.tif", True),
    ("a.TIFF", True), ("a.bmp", True), ("a.webp", True), ("a.WebP", True),
    ("a.txt", False), ("a.gif", False), ("a.jpg.bak", False), ("jpg", False), ("a", False), ("a.csv", False),
])
def test_is_image_path(name, expected):
    assert is_image_path(name) is expected


# --- folders --------------------------------------------------------------------------------------------------------

def test_folder_recursive_any_case_extensions_and_non_images_counted(tmp_path):
    root = tmp_path / "crops"
    images = ["a.JPG", "b.Png", "c.tiff", "d.webp", "e.bmp", "f.jpeg", "g.TIF", "sub/h.png", "sub/deeper/i.jpg"]
    for name in images:
        touch(root / name)
    for name in ["readme.md", "table.csv", "noext", "list.txt", "sub/x.gif", "sub/deeper/y.json"]:
        touch(root / name)
    result = collect_images([str(root)])
    assert sorted(result.files) == sorted(str(root / n) for n in images)
    assert result.ignored_non_images == 6
    assert result.skipped == []  # a .txt inside a folder is just a non-image, never read as a list


def test_folder_order_is_sorted_and_stable(tmp_path):
    root = tmp_path / "crops"
    for name in ["z.jpg", "b.jpg", "a.jpg", "m/c.jpg", "m/a.jpg", "c/x.jpg"]:  # created out of order
        touch(root / name)
    expected = [str(root / n) for n in ["a.jpg", "b.jpg", "c/x.jpg", "m/a.jpg", "m/c.jpg", "z.jpg"]]
    assert collect_images([str(root)]).files == expected
    assert collect_images([str(root)]).files == expected


def test_folder_trailing_slash(tmp_path):
    image = touch(tmp_path / "crops" / "a.jpg")
    assert collect_images([str(tmp_path / "crops") + os.sep]).files == [image]


def test_folder_whose_name_looks_like_a_glob_is_a_folder(tmp_path):
    image = touch(tmp_path / "run[1]" / "a.jpg")
    assert collect_images([str(tmp_path / "run[1]")]).files == [image]


def test_folders_in_given_order(tmp_path):
    b = touch(tmp_path / "b" / "1.jpg")
    a = touch(tmp_path / "a" / "2.jpg")
    assert collect_images([str(tmp_path / "b"), str(tmp_path / "a")]).files == [b, a]


# --- globs ----------------------------------------------------------------------------------------------------------

def test_glob_star(tmp_path):
    a, b = touch(tmp_path / "a.jpg"), touch(tmp_path / "b.jpg")
    touch(tmp_path / "c.png")
    touch(tmp_path / "sub" / "d.jpg")
    assert collect_images([str(tmp_path / "*.jpg")]).files == [a, b]


def test_glob_double_star_is_recursive_and_sorted(tmp_path):
    files = [touch(tmp_path / n) for n in ["top.jpg", "s1/a.jpg", "s1/s2/b.jpg", "s3/c.jpg"]]
    touch(tmp_path / "s1" / "skip.png")
    result = collect_images([str(tmp_path / "**" / "*.jpg")])
    assert sorted(result.files) == sorted(files)
    assert result.files == sorted(result.files)


def test_glob_double_star_alone_takes_images_and_counts_others(tmp_path):
    images = [touch(tmp_path / n) for n in ["a.jpg", "s/b.PNG"]]
    touch(tmp_path / "s" / "c.csv")
    result = collect_images([str(tmp_path / "**")])
    assert result.files == sorted(images)
    assert result.ignored_non_images == 1


def test_glob_question_mark_and_class(tmp_path):
    a1, a2 = touch(tmp_path / "a1.jpg"), touch(tmp_path / "a2.jpg")
    touch(tmp_path / "a10.jpg")
    touch(tmp_path / "b1.jpg")
    assert collect_images([str(tmp_path / "a?.jpg")]).files == [a1, a2]
    assert collect_images([str(tmp_path / "[a]1.jpg")]).files == [a1]


def test_glob_matching_nothing_on_command_line_is_input_error(tmp_path):
    touch(tmp_path / "a.jpg")
    pattern = str(tmp_path / "*.png")
    with pytest.raises(InputError) as excinfo:
        collect_images([str(tmp_path / "a.jpg"), pattern])
    assert pattern in str(excinfo.value)
    assert "matches no file" in str(excinfo.value)


def test_glob_and_folder_overlap_counted_once(tmp_path):
    a = touch(tmp_path / "d" / "a.jpg")
    result = collect_images([str(tmp_path / "d"), str(tmp_path / "d" / "*.jpg")])
    assert result.files == [a]


def test_glob_does_not_read_matched_txt_files_as_lists(tmp_path):
    image = touch(tmp_path / "crops" / "a.jpg")
    (tmp_path / "crops" / "notes.txt").write_text("collected in June\nbox 3\n", encoding="utf-8")
    result = collect_images([str(tmp_path / "crops" / "**")])
    assert result.files == [image]
    assert result.skipped == []
    assert result.ignored_non_images == 1


# --- .txt lists -----------------------------------------------------------------------------------------------------

def test_list_entries_relative_to_list_folder_with_comments_and_blanks(tmp_path, monkeypatch):
    data = tmp_path / "data"
    b = touch(data / "imgs" / "b.jpg")
    a = touch(data / "imgs" / "a.jpg")
    c = touch(data / "more" / "c.png")
    absolute = touch(tmp_path / "elsewhere" / "abs.jpg")
    lst = write_list(data / "list.txt", [
        "# crops for the test",
        "",
        "imgs/b.jpg",
        "   ",
        "  imgs/a.jpg  ",
        "   # indented comment",
        "more",
        absolute,
    ])
    monkeypatch.chdir(tmp_path / "elsewhere")  # entries must not be resolved against the working directory
    result = collect_images([lst])
    assert [os.path.abspath(f) for f in result.files] == [b, a, c, absolute]
    assert result.skipped == []


def test_list_with_relative_path_to_list(tmp_path, monkeypatch):
    touch(tmp_path / "lists" / "imgs" / "a.jpg")
    write_list(tmp_path / "lists" / "l.txt", ["imgs/a.jpg"])
    monkeypatch.chdir(tmp_path)
    assert collect_images(["lists/l.txt"]).files == [os.path.join("lists", "imgs", "a.jpg")]
    write_list(tmp_path / "top.txt", ["lists/imgs/a.jpg"])
    assert collect_images(["top.txt"]).files == [os.path.join("lists", "imgs", "a.jpg")]


def test_list_missing_entry_is_skipped_with_list_path_and_line(tmp_path):
    a = touch(tmp_path / "a.jpg")
    lst = write_list(tmp_path / "list.txt", ["# header", "a.jpg", "", "gone.jpg"])
    result = collect_images([lst])
    assert result.files == [a]
    assert len(result.skipped) == 1
    entry, reason = result.skipped[0]
    assert entry == str(tmp_path / "gone.jpg")
    assert f"{lst}:4" in reason
    assert "no such file" in reason


def test_list_glob_entry_relative_and_glob_matching_nothing_is_skipped(tmp_path):
    a, b = touch(tmp_path / "imgs" / "a.jpg"), touch(tmp_path / "imgs" / "b.jpg")
    lst = write_list(tmp_path / "list.txt", ["imgs/*.jpg", "imgs/*.png"])
    result = collect_images([lst])
    assert result.files == [a, b]
    assert len(result.skipped) == 1
    assert result.skipped[0][0] == str(tmp_path / "imgs" / "*.png")
    assert f"{lst}:2" in result.skipped[0][1] and "matches no file" in result.skipped[0][1]


def test_nested_lists_resolve_against_their_own_folder(tmp_path):
    a = touch(tmp_path / "a.jpg")
    b = touch(tmp_path / "inner" / "b.jpg")
    c = touch(tmp_path / "c.jpg")
    write_list(tmp_path / "inner" / "inner.txt", ["b.jpg", "missing.jpg"])
    outer = write_list(tmp_path / "outer.txt", ["a.jpg", "inner/inner.txt", "c.jpg"])
    result = collect_images([outer])
    assert result.files == [a, b, c]
    assert len(result.skipped) == 1
    inner_path = str(tmp_path / "inner" / "inner.txt")
    assert result.skipped[0][0] == str(tmp_path / "inner" / "missing.jpg")
    assert f"{inner_path}:2" in result.skipped[0][1]


def test_list_including_itself_is_reported_and_terminates(tmp_path):
    a = touch(tmp_path / "a.jpg")
    lst = write_list(tmp_path / "self.txt", ["a.jpg", "self.txt"])
    result = collect_images([lst])
    assert result.files == [a]
    assert len(result.skipped) == 1
    assert "includes itself" in result.skipped[0][1]


def test_lists_including_each_other_terminate(tmp_path):
    a, b = touch(tmp_path / "a.jpg"), touch(tmp_path / "b.jpg")
    write_list(tmp_path / "one.txt", ["a.jpg", "two.txt"])
    write_list(tmp_path / "two.txt", ["b.jpg", "one.txt"])
    result = collect_images([str(tmp_path / "one.txt")])
    assert result.files == [a, b]
    assert [r for _, r in result.skipped if "includes itself" in r]


def test_same_list_twice_is_not_a_cycle(tmp_path):
    a = touch(tmp_path / "a.jpg")
    write_list(tmp_path / "leaf.txt", ["a.jpg"])
    outer = write_list(tmp_path / "outer.txt", ["leaf.txt", "leaf.txt"])
    result = collect_images([outer])
    assert result.files == [a]
    assert result.skipped == []


def test_list_with_utf8_bom(tmp_path):
    a = touch(tmp_path / "a.jpg")
    lst = tmp_path / "bom.txt"
    lst.write_bytes("\ufeffa.jpg\n".encode("utf-8"))
    assert collect_images([str(lst)]).files == [a]


def test_list_that_is_not_utf8_is_input_error_naming_it(tmp_path):
    touch(tmp_path / "a.jpg")
    lst = tmp_path / "latin.txt"
    lst.write_bytes("caf\xe9.jpg\n".encode("latin-1"))
    with pytest.raises(InputError) as excinfo:
        collect_images([str(lst)])
    assert str(lst) in str(excinfo.value)


def test_list_with_missing_entry_only_gives_no_images_error(tmp_path):
    lst = write_list(tmp_path / "list.txt", ["gone.jpg"])
    with pytest.raises(InputError, match="no images found"):
        collect_images([lst])


# --- each file once -------------------------------------------------------------------------------------------------

def test_same_file_via_folder_and_explicit_path_once_first_wins(tmp_path):
    a = touch(tmp_path / "d" / "a.jpg")
    b = touch(tmp_path / "d" / "b.jpg")
    assert collect_images([b, str(tmp_path / "d")]).files == [b, a]
    assert collect_images([str(tmp_path / "d"), b, a]).files == [a, b]


def test_same_file_spelled_two_ways_once(tmp_path):
    a = touch(tmp_path / "d" / "a.jpg")
    assert collect_images([a, str(tmp_path / "d" / ".." / "d" / "a.jpg")]).files == [a]


def test_same_file_via_symlink_once(tmp_path):
    a = touch(tmp_path / "d" / "a.jpg")
    link = tmp_path / "link.jpg"
    link.symlink_to(tmp_path / "d" / "a.jpg")
    assert collect_images([a, str(link)]).files == [a]
    assert collect_images([str(link), a]).files == [str(link)]


def test_symlinked_folder_is_followed_once(tmp_path):
    a = touch(tmp_path / "real" / "a.jpg")
    (tmp_path / "alias").symlink_to(tmp_path / "real", target_is_directory=True)
    assert collect_images([str(tmp_path / "alias")]).files == [str(tmp_path / "alias" / "a.jpg")]
    assert collect_images([str(tmp_path / "real"), str(tmp_path / "alias")]).files == [a]


def test_symlink_loop_in_folder_terminates(tmp_path):
    root = tmp_path / "root"
    a = touch(root / "a.jpg")
    b = touch(root / "sub" / "b.jpg")
    (root / "sub" / "up").symlink_to(root, target_is_directory=True)  # root/sub/up -> root
    (root / "self").symlink_to(root / "self")  # a link to itself (ELOOP)
    (root / "dangling.jpg").symlink_to(tmp_path / "nowhere.jpg")
    result = collect_images([str(root)])
    assert result.files == [a, b]


# --- errors ---------------------------------------------------------------------------------------------------------

def test_missing_command_line_path_is_input_error_naming_it(tmp_path):
    a = touch(tmp_path / "a.jpg")
    missing = str(tmp_path / "nope" / "b.jpg")
    with pytest.raises(InputError) as excinfo:
        collect_images([a, missing])
    assert missing in str(excinfo.value)
    assert "no such file" in str(excinfo.value)


def test_input_error_is_a_value_error():
    assert issubclass(InputError, ValueError)


def test_no_images_lists_supported_extensions(tmp_path):
    touch(tmp_path / "d" / "readme.md")
    touch(tmp_path / "d" / "x.gif")
    with pytest.raises(InputError) as excinfo:
        collect_images([str(tmp_path / "d")])
    message = str(excinfo.value)
    assert str(tmp_path / "d") in message
    for extension in IMAGE_EXTENSIONS:
        assert extension in message
    assert "2 other files" in message


def test_empty_folder_is_no_images_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no images found"):
        collect_images([str(tmp_path / "empty")])


def test_only_explicit_non_image_is_no_images_error(tmp_path):
    with pytest.raises(InputError, match="supported extensions"):
        collect_images([touch(tmp_path / "a.gif")])
