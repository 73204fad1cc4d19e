"""TFDS builders on fake manual directories, the prepare CLI, image folders, quickstart photos."""

import os

import numpy as np
from PIL import Image
import pytest

from define_jax.data import image_folder
from define_jax.data import quickstart
from define_jax.datasets import ffhq
from define_jax.datasets import nvidia_irregular_masks
from define_jax.datasets import prepare


def random_rgb(height, width, seed):
  return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def write_ffhq(manual_dir):
  """Official layout, tiny images: two training files (one greyscale), one corrupt, one
  validation image (RGBA, not square)."""
  for folder in ('00000', '60000'):
    (manual_dir / 'images1024x1024' / folder).mkdir(parents=True)
  Image.fromarray(random_rgb(64, 64, 0)).save(manual_dir / 'images1024x1024/00000/00000.png')
  Image.fromarray(random_rgb(64, 64, 1)[..., 0]).save(
      manual_dir / 'images1024x1024/00000/00001.png'
  )
  (manual_dir / 'images1024x1024/00000/00002.png').write_bytes(b'\x89PNG truncated')
  rgba = np.concatenate([random_rgb(64, 80, 2), np.full((64, 80, 1), 255, np.uint8)], axis=-1)
  rgba[:8, :, 3] = 0  # transparent rows: read as white, as everywhere (image_files)
  Image.fromarray(rgba).save(manual_dir / 'images1024x1024/60000/60000.png')
  (manual_dir / 'images1024x1024/LICENSE.txt').write_text('not an image')
  return manual_dir


def by_number(data_source, key):
  return {int(example[key]): example for example in data_source}


def test_ffhq_builder_splits_by_number_and_resizes_with_lanczos(tmp_path):
  builder = prepare.prepare_dataset('ffhq/256', write_ffhq(tmp_path / 'manual'), tmp_path / 'tfds')
  assert builder.info.file_format.value == 'array_record'
  assert {name: split.num_examples for name, split in builder.info.splits.items()} == {
      'train': 2,
      'validation': 1,
  }

  train = by_number(builder.as_data_source('train'), 'image_number')
  assert sorted(train) == [0, 1]  # the corrupt 00002.png is skipped
  expected = Image.fromarray(random_rgb(64, 64, 0)).resize((256, 256), Image.LANCZOS)
  np.testing.assert_array_equal(train[0]['image'], np.asarray(expected))
  grey = train[1]['image']
  assert grey.shape == (256, 256, 3) and (grey[..., 0] == grey[..., 2]).all()

  validation = by_number(builder.as_data_source('validation'), 'image_number')
  on_white = random_rgb(64, 80, 2)
  on_white[:8] = 255
  centre = Image.fromarray(on_white).resize(
      (256, 256), Image.LANCZOS, box=(8, 0, 72, 64)
  )
  np.testing.assert_array_equal(validation[60000]['image'], np.asarray(centre))


def test_ffhq_512_from_thumbnails_only(tmp_path):
  manual_dir = tmp_path / 'manual'
  (manual_dir / 'thumbnails128x128' / '05000').mkdir(parents=True)
  Image.fromarray(random_rgb(128, 128, 3)).save(manual_dir / 'thumbnails128x128/05000/05123.png')
  builder = prepare.prepare_dataset('ffhq/512', manual_dir, tmp_path / 'tfds')
  assert list(builder.info.splits) == ['train']
  (example,) = list(builder.as_data_source('train'))
  assert example['image'].shape == (512, 512, 3) and example['image_number'] == 5123


def test_ffhq_source_dir_and_file_discovery(tmp_path):
  write_ffhq(tmp_path)
  assert ffhq.find_source_dir(tmp_path) == tmp_path / 'images1024x1024'
  assert sorted(ffhq.find_image_files(tmp_path / 'images1024x1024')) == [0, 1, 2, 60000]


def write_partial_ffhq(manual_dir, numbers, side=32):
  """FFHQ's layout (images1024x1024/NN000/NNNNN.png) holding only the given file numbers."""
  for number in numbers:
    folder = manual_dir / 'images1024x1024' / f'{number // 1000 * 1000:05d}'
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(random_rgb(side, side, number)).save(folder / f'{number:05d}.png')
  return manual_dir


def test_partial_ffhq_split_holds_out_a_stable_fraction_without_validation_files():
  assert ffhq.split_numbers([3, 5, 60001, 69999]) == ([3, 5], [60001, 69999])  # Official.
  train, validation = ffhq.split_numbers(range(10))
  assert len(validation) == 1 and sorted(train + validation) == list(range(10))
  assert ffhq.split_numbers([7]) == ([7], [])  # Nothing to hold out of one file.
  # 10 % by file name: adding files never moves one between the splits.
  _, held_out = ffhq.split_numbers(range(2000))
  assert 150 < len(held_out) < 250
  _, held_out_of_more = ffhq.split_numbers(range(4000))
  assert set(held_out_of_more) & set(range(2000)) == set(held_out)


def test_prepare_partial_ffhq_reports_what_is_present_and_holds_out_validation(tmp_path, capsys):
  manual_dir = write_partial_ffhq(tmp_path / 'manual', range(10))
  builder = prepare.prepare_dataset('ffhq/256', manual_dir, tmp_path / 'tfds')
  out = capsys.readouterr().out
  assert ("10 of FFHQ's 70,000 images present (10 of 60,000 training files 00000-59999, 0 of "
          '10,000 validation files 60000-69999); validation: 1 of them held out') in out
  train, validation = ffhq.split_numbers(range(10))
  assert {name: split.num_examples for name, split in builder.info.splits.items()} == {
      'train': len(train), 'validation': len(validation)}
  assert [int(x['image_number']) for x in builder.as_data_source('validation')] == validation


def test_prepare_rebuilds_ffhq_when_its_files_change(tmp_path, capsys):
  manual_dir = write_partial_ffhq(tmp_path / 'manual', [0, 1, 2])
  prepare.prepare_dataset('ffhq/256', manual_dir, tmp_path / 'tfds')
  again = prepare.prepare_dataset('ffhq/256', manual_dir, tmp_path / 'tfds')
  assert 'Rebuilding' not in capsys.readouterr().out  # Same files: kept as it is.
  assert again.info.splits['train'].num_examples + again.info.splits['validation'].num_examples == 3

  write_partial_ffhq(manual_dir, [3, 60000])  # Added: now the official validation split too.
  rebuilt = prepare.prepare_dataset('ffhq/256', manual_dir, tmp_path / 'tfds')
  assert 'Rebuilding ffhq/256: the files in' in capsys.readouterr().out
  assert {name: split.num_examples for name, split in rebuilt.info.splits.items()} == {
      'train': 4, 'validation': 1}
  reread = prepare.make_builder('ffhq/256', tmp_path / 'tfds')
  assert sorted(int(x['image_number']) for x in reread.as_data_source('train')) == [0, 1, 2, 3]
  assert not list((tmp_path / 'tfds' / 'ffhq' / '256').glob('*.outdated'))


def write_mask(path, white_square):
  """512-wide mask with a white square at rows/cols [100:300]; white means whatever the set says."""
  pixels = np.zeros((512, 512), np.uint8)
  pixels[100:300, 100:300] = 255 if white_square else 0
  Image.fromarray(pixels).save(path)


def test_qd_imd_builder_stores_one_for_known_pixels(tmp_path):
  manual_dir = tmp_path / 'manual'
  for split in ('train', 'test'):
    (manual_dir / 'qd_imd' / split).mkdir(parents=True)
  write_mask(manual_dir / 'qd_imd/train/a.png', white_square=True)
  write_mask(manual_dir / 'qd_imd/train/b.png', white_square=True)
  write_mask(manual_dir / 'qd_imd/test/c.png', white_square=True)
  builder = prepare.prepare_dataset('qd_imd', manual_dir, tmp_path / 'tfds')
  assert {name: split.num_examples for name, split in builder.info.splits.items()} == {
      'train': 2,
      'test': 1,
  }
  (example,) = list(builder.as_data_source('test'))
  assert example['file_name'] == b'c.png'
  mask = example['mask'][..., 0]
  assert mask.dtype == np.uint8 and set(np.unique(mask)) == {0, 1}
  assert (mask[100:300, 100:300] == 1).all() and mask.sum() == 200 * 200  # white = keep


def test_nvidia_builder_features_follow_the_file_number(tmp_path):
  manual_dir = tmp_path / 'manual' / 'testing_mask_dataset'
  manual_dir.mkdir(parents=True)
  for number in (0, 1500, 4001, 11999):
    write_mask(manual_dir / f'{number:05d}.png', white_square=True)
  write_mask(manual_dir / '12000.png', white_square=True)  # beyond the official set: ignored
  (manual_dir / '00042.png').write_bytes(b'garbage')  # unreadable: skipped
  builder = prepare.prepare_dataset(
      'nvidia_irregular_masks', tmp_path / 'manual', tmp_path / 'tfds'
  )
  examples = by_number(builder.as_data_source('test'), 'file_number')
  assert sorted(examples) == [0, 1500, 4001, 11999]
  assert {n: int(e['hole_ratio_band']) for n, e in examples.items()} == {
      0: 0,
      1500: 0,
      4001: 2,
      11999: 5,
  }
  assert {n: bool(e['touches_border']) for n, e in examples.items()} == {
      0: True,
      1500: False,
      4001: True,
      11999: False,
  }
  mask = examples[0]['mask'][..., 0]
  assert (mask[100:300, 100:300] == 0).all() and mask.sum() == 512 * 512 - 200 * 200  # white = hole
  # The names prepared datasets store (TFDS refuses other names when it reads them back).
  assert builder.info.features['hole_ratio_band'].names == [
      '0-10%', '10-20%', '20-30%', '30-40%', '40-50%', '50-60%']


def test_prepare_cli_builds_and_reports(tmp_path, capsys):
  manual_dir = tmp_path / 'manual'
  manual_dir.mkdir()
  write_mask(manual_dir / '02000.png', white_square=True)
  prepare.main(
      [
          '--dataset',
          'nvidia_irregular_masks',
          '--manual_dir',
          str(manual_dir),
          '--data_dir',
          str(tmp_path / 'tfds'),
      ]
  )
  assert "{'test': 1}" in capsys.readouterr().out
  assert prepare.make_builder('nvidia_irregular_masks', tmp_path / 'tfds').is_prepared()


def test_prepare_rejects_unknown_datasets_and_empty_manual_dirs(tmp_path):
  with pytest.raises(ValueError, match='unknown dataset'):
    prepare.make_builder('celeba')
  (tmp_path / 'empty').mkdir()
  (tmp_path / 'empty' / 'README').write_text('nothing here')
  with pytest.raises(FileNotFoundError, match='No NNNNN.png'):
    prepare.prepare_dataset('nvidia_irregular_masks', tmp_path / 'empty', tmp_path / 'tfds')


def test_real_nvidia_masks_match_their_band(shared_data, tmp_path):
  """Polarity check on real files: the stored hole ratio lies in the band the file number names."""
  source = os.path.join(shared_data, 'masks', 'nvidia_irregular')
  manual_dir = tmp_path / 'manual'
  manual_dir.mkdir()
  numbers = [band * 2000 + offset for band in range(6) for offset in (0, 1500)]
  for number in numbers:
    os.symlink(os.path.join(source, f'{number:05d}.png'), manual_dir / f'{number:05d}.png')
  builder = prepare.prepare_dataset('nvidia_irregular_masks', manual_dir, tmp_path / 'tfds')
  for example in builder.as_data_source('test'):
    band = int(example['hole_ratio_band'])
    assert band == nvidia_irregular_masks.band_of(int(example['file_number']))
    hole_ratio = 1.0 - example['mask'].mean()
    assert band * 0.1 - 0.01 <= hole_ratio <= (band + 1) * 0.1 + 0.01, (
        example['file_number'],
        hole_ratio,
    )


def test_image_folder_listing_is_recursive_and_filtered(tmp_path):
  for name in (
      'a.jpg',
      'sub/b.PNG',
      'sub/deeper/c d.jpeg',
      'e.bmp',
      'f.webp',
      'notes.txt',
      '.hidden.jpg',
      '.cache/g.jpg',
      'sub/._b.PNG',
  ):
    (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / name).write_bytes(b'')
  assert image_folder.list_image_files(tmp_path) == [
      'a.jpg',
      'e.bmp',
      'f.webp',
      'sub/b.PNG',
      'sub/deeper/c d.jpeg',
  ]
  with pytest.raises(FileNotFoundError, match='missing'):
    image_folder.list_image_files(tmp_path / 'missing')


def test_image_folder_split_is_stable_and_proportional():
  files = [f'person_{k}/{k:05d}.jpg' for k in range(4000)]
  train, validation = image_folder.split_image_files(files, 0.1)
  assert sorted(train + validation) == sorted(files) and not set(train) & set(validation)
  assert 300 < len(validation) < 500
  # Membership depends on the path alone: not on order, nor on the other files.
  _, validation_of_subset = image_folder.split_image_files(files[::-1][:1000], 0.1)
  assert set(validation_of_subset) == set(validation) & set(files[::-1][:1000])
  assert (
      image_folder.split_image_files(files, 0.0)[1] == []
      and image_folder.split_image_files(files, 1.0)[0] == []
  )
  with pytest.raises(ValueError, match='validation_fraction'):
    image_folder.split_image_files(files, 1.5)


def test_quickstart_photos_are_installed_colour_photographs():
  for split in ('train', 'validation'):
    paths = quickstart.photo_files(split)
    assert paths
    for path in paths:
      with Image.open(path) as photo:
        assert photo.mode == 'RGB' and min(photo.size) >= 256
  assert not set(quickstart.TRAIN_PHOTOS) & set(quickstart.VALIDATION_PHOTOS)
