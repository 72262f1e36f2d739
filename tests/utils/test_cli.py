

def test_data_name_is_none_where_the_arguments_name_no_folder():
    """``data_name`` of arguments without a data folder was '.' (``normpath('')``): a card read "Trained on: `.`"
    and validate ``--data-dir .`` put ``datasets: [.]`` in the Hub metadata. '', '.', '..' and '/' name no data."""
    from timm_cra.utils.cli import data_name
    for args in ({}, {'data_dir': ''}, {'data_dir': '.'}, {'data_dir': '..'}, {'data_dir': '/'}):
        assert data_name(args) is None, args
    assert data_name({'data_dir': '/data/cf/'}) == 'cf'
    assert data_name({'data_dir': '/data/cf/val'}) == 'cf' and data_name({'data_dir': 'cf/train/'}) == 'cf'
    for kind in ('folder', 'hfds', 'parquet', 'folder-auto'):  # a reader's kind, not the data's name
        assert data_name({'dataset': kind, 'data_dir': '/'}) is None, kind
    assert data_name({'dataset': 'torch/cifar10', 'data_dir': '/'}) == 'torch/cifar10'
    assert data_name({'dataset': 'hfds/uoft-cs/cifar10', 'data_dir': '/x'}) == 'uoft-cs/cifar10'
