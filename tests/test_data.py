"""define_jax.data: the training pipeline (element spec, determinism, exact resume, host
sharding, bad input), decoding, the dataset and mask registries, validation images."""

import io
import os
import shutil

import cv2
import jax
import numpy as np
from PIL import Image
import pytest

from configs import default
from define_jax.data import image_sources
from define_jax.data import pipeline
from define_jax.data import skips
from define_jax.datasets import prepare
from define_jax.eval import evaluation_set
from define_jax.files import image_files

from conftest import with_fields

SIZE = 32


def smooth_photo(height, width, seed):
  """A smooth random RGB image (survives JPEG) that differs per seed."""
  rng = np.random.default_rng(seed)
  coarse = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
  return cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)


@pytest.fixture(scope='module')
def face_dir(tmp_path_factory):
  """30 photos of several sizes and formats in nested folders."""
  directory = tmp_path_factory.mktemp('faces')
  for k in range(30):
    height, width = [(48, 40), (40, 56), (64, 64)][k % 3]
    path = directory / f'person_{k % 4}' / f'face {k:02d}.{"jpg" if k % 2 else "png"}'
    path.parent.mkdir(exist_ok=True)
    Image.fromarray(smooth_photo(height, width, k)).save(path)
  return directory


def make_config(**overrides):
  """configs/default.py (where every field and its default lives) with small test data;
  each setting goes to the section holding its field."""
  return with_fields(default.get_config(), **{
      **dict(image_size=SIZE, batch_size=8, dataset='image_folder', validation_fraction=0.5,
             hole_ratio_min=0.2, hole_ratio_max=0.4, num_eval_images=10, prefetch=2),
      **overrides})


def take(dataset, count):
  iterator = dataset.as_numpy_iterator()
  return [next(iterator) for _ in range(count)]


def flat(batch, name):
  """[devices, per_device, ...] -> [local_batch, ...] in host position order."""
  return batch[name].reshape((-1,) + batch[name].shape[2:])


def assert_batches_equal(first, second):
  assert len(first) == len(second)
  for a, b in zip(first, second):
    assert a.keys() == b.keys()
    for name in a:
      np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def test_four_simulated_devices():
  assert jax.local_device_count() == 4  # tests/conftest.py sets XLA_FLAGS


def test_train_element_spec_range_and_mask_convention(face_dir):
  (batch,) = take(pipeline.create_train_dataset(make_config(image_dir=str(face_dir))), 1)
  assert set(batch) == {'image', 'mask'}
  assert batch['image'].shape == (4, 2, SIZE, SIZE, 3) and batch['image'].dtype == np.float32
  assert batch['mask'].shape == (4, 2, SIZE, SIZE, 1) and batch['mask'].dtype == np.float32
  assert 0.0 <= batch['image'].min() and batch['image'].max() <= 1.0 and batch['image'].std() > 0.05
  assert set(np.unique(batch['mask'])) == {0.0, 1.0}
  # 1 = known: the hole (zeros) fraction of every mask is in [hole_ratio_min, hole_ratio_max].
  hole_ratios = 1.0 - flat(batch, 'mask').mean(axis=(1, 2, 3))
  assert ((hole_ratios >= 0.2) & (hole_ratios <= 0.4)).all(), hole_ratios


def test_same_seed_same_batches_other_seed_other_batches(face_dir):
  config = make_config(image_dir=str(face_dir))
  first = take(pipeline.create_train_dataset(config), 3)
  assert_batches_equal(first, take(pipeline.create_train_dataset(config), 3))
  other = take(
      pipeline.create_train_dataset(make_config(image_dir=str(face_dir), seed=1)), 1
  )[0]
  assert not np.array_equal(first[0]['mask'], other['mask'])
  assert not np.array_equal(first[0]['image'], other['image'])


def test_resume_at_step_k_equals_the_uninterrupted_batches(face_dir):
  config = make_config(image_dir=str(face_dir))  # about 15 training images: epochs end mid-batch
  uninterrupted = take(pipeline.create_train_dataset(config), 8)
  resumed = take(pipeline.create_train_dataset(config, start_step=5), 3)
  assert_batches_equal(uninterrupted[5:], resumed)


def test_resume_far_ahead_needs_no_replay(face_dir):
  # Replaying 8e9 elements would never finish: the resumed dataset skips ahead instead.
  batch = take(
      pipeline.create_train_dataset(make_config(image_dir=str(face_dir)), start_step=10**9), 1
  )
  assert len(batch) == 1


def test_hosts_take_disjoint_slices_of_the_same_global_batch(face_dir):
  config = make_config(image_dir=str(face_dir))
  single = take(pipeline.create_train_dataset(config), 3)
  hosts = [
      take(pipeline.create_train_dataset(config, process_index=p, process_count=2), 3)
      for p in (0, 1)
  ]
  for step in range(3):
    for host in hosts:
      assert host[step]['image'].shape == (4, 1, SIZE, SIZE, 3)
    for name in ('image', 'mask'):
      joined = np.concatenate([flat(hosts[0][step], name), flat(hosts[1][step], name)])
      np.testing.assert_array_equal(joined, flat(single[step], name))
    masks_0, masks_1 = flat(hosts[0][step], 'mask'), flat(hosts[1][step], 'mask')
    assert not any(np.array_equal(a, b) for a in masks_0 for b in masks_1)


def test_each_epoch_visits_every_training_image_once(tmp_path):
  colours = [(20 * k, 255 - 20 * k, 100 + 10 * k) for k in range(12)]
  for k, colour in enumerate(colours):
    Image.new('RGB', (40, 40), colour).save(tmp_path / f'{k}.png')
  config = make_config(image_dir=str(tmp_path), validation_fraction=0.0, batch_size=4)
  batches = take(pipeline.create_train_dataset(config), 6)  # two epochs of 12
  seen = [
      tuple(np.round(image.mean(axis=(0, 1)) * 255).astype(int))
      for b in batches
      for image in flat(b, 'image')
  ]
  assert sorted(seen[:12]) == sorted(colours) and sorted(seen[12:]) == sorted(colours)
  assert seen[:12] != seen[12:]  # a new permutation per epoch


@pytest.mark.parametrize('batch_size, process_count', [(6, 1), (4, 2)])
def test_batch_size_must_split_over_all_devices(face_dir, batch_size, process_count):
  config = make_config(image_dir=str(face_dir), batch_size=batch_size)
  with pytest.raises(ValueError, match='batch_size'):
    pipeline.create_train_dataset(config, process_index=0, process_count=process_count)


def test_validation_images_are_fixed_whatever_the_seed(face_dir):
  config = make_config(image_dir=str(face_dir))
  images, names = evaluation_set.validation_images(config, SIZE, 10)
  assert images.shape == (10, SIZE, SIZE, 3) and images.dtype == np.float32
  assert len({image.tobytes() for image in images}) == 10 and len(names) == 10
  # Every evaluation sees the same images, whatever the training seed.
  np.testing.assert_array_equal(images, evaluation_set.validation_images(config, SIZE, 10)[0])
  other_seed = make_config(image_dir=str(face_dir), seed=3)
  np.testing.assert_array_equal(images, evaluation_set.validation_images(other_seed, SIZE, 10)[0])


def test_validation_images_are_capped_by_the_split(face_dir):
  images, _ = evaluation_set.validation_images(make_config(image_dir=str(face_dir)), SIZE, 1000)
  assert 3 <= len(images) < 30  # the whole validation split, each image once
  assert len({image.tobytes() for image in images}) == len(images)


def png_bytes(pixels):
  """PNG encoding of an array or a PIL image."""
  buffer = io.BytesIO()
  (pixels if isinstance(pixels, Image.Image) else Image.fromarray(pixels)).save(
      buffer, format='PNG'
  )
  return buffer.getvalue()


def jpeg_bytes(pixels):
  ok, encoded = cv2.imencode('.jpg', pixels[..., ::-1])
  assert ok
  return encoded.tobytes()


def read_photo(data):
  return image_files.read_photo(data, max_pixels=None)


def test_read_photo_converts_grey_alpha_palette_and_16_bit():
  rgb = smooth_photo(20, 30, 0)
  grey = read_photo(png_bytes(rgb[..., 0]))
  assert grey.shape == (20, 30, 3) and (grey == rgb[..., :1]).all()
  rgba = np.concatenate([rgb, np.full((20, 30, 1), 255, np.uint8)], axis=-1)
  rgba[:5, :, 3] = 0
  on_white = rgb.copy()
  on_white[:5] = 255
  np.testing.assert_array_equal(read_photo(png_bytes(rgba)), on_white)  # as a viewer shows it
  palette = Image.fromarray(rgb).convert('P')
  np.testing.assert_array_equal(read_photo(png_bytes(palette)), np.asarray(palette.convert('RGB')))
  ok, sixteen = cv2.imencode('.png', np.array([[0x8080, 33096, 0xFFFF]], np.uint16))
  assert ok and (read_photo(sixteen.tobytes()) == [[[128] * 3, [129] * 3, [255] * 3]]).all()
  ok, sixteen_rgb = cv2.imencode('.png', np.full((8, 8, 3), 0xFF00, np.uint16))
  assert ok and (read_photo(sixteen_rgb.tobytes()) == 255).all()


def test_decode_rejects_corrupt_and_truncated_data():
  photo = jpeg_bytes(smooth_photo(64, 64, 1))
  for data in (
      b'',
      b'definitely not an image',
      photo[: len(photo) // 2],
      png_bytes(smooth_photo(64, 64, 2))[:300],
  ):
    with pytest.raises(image_files.InputError):
      read_photo(data)


def test_small_images_are_upscaled_and_crops_are_square():
  tiny = smooth_photo(3, 5, 0)
  assert image_sources.crop_and_resize(tiny, SIZE, None).shape == (SIZE, SIZE, 3)
  wide = smooth_photo(50, 120, 0)
  centre = image_sources.crop_and_resize(wide, 50, None)
  np.testing.assert_array_equal(centre, wide[:, 35:85])
  random_crop = image_sources.crop_and_resize(wide, 50, np.random.default_rng(0))
  assert random_crop.shape == (50, 50, 3)


@pytest.fixture()
def bad_face_dir(tmp_path):
  """Readable oddities (converted) and unreadable files (skipped), plus a non-image file."""
  photo = smooth_photo(48, 48, 5)
  (tmp_path / 'good.jpg').write_bytes(jpeg_bytes(photo))
  (tmp_path / 'grey.png').write_bytes(png_bytes(photo[..., 0]))
  (tmp_path / 'rgba.png').write_bytes(png_bytes(np.concatenate([photo, photo[..., :1]], axis=-1)))
  cv2.imwrite(str(tmp_path / 'sixteen.png'), photo.astype(np.uint16) * 257)
  (tmp_path / 'tiny.png').write_bytes(png_bytes(smooth_photo(3, 5, 6)))
  (tmp_path / 'corrupt.jpg').write_bytes(os.urandom(2000))
  (tmp_path / 'truncated.jpg').write_bytes(jpeg_bytes(photo)[:400])
  (tmp_path / 'truncated.png').write_bytes(png_bytes(photo)[:200])
  (tmp_path / 'empty.png').write_bytes(b'')
  (tmp_path / 'notes.txt').write_text('not an image')
  return tmp_path


def test_bad_files_are_converted_or_skipped_and_counted(bad_face_dir):
  config = make_config(image_dir=str(bad_face_dir), validation_fraction=0.0, batch_size=4)
  before = skips.skipped_input_counts()['images']
  batches = take(
      pipeline.create_train_dataset(config), 6
  )  # 24 elements: two epochs of 9 files and more
  skipped = skips.skipped_input_counts()['images'] - before
  assert skipped >= 2 * 4  # four unreadable files, hit at least once per epoch
  for batch in batches:
    assert np.isfinite(batch['image']).all() and batch['image'].std() > 0.01
  # The skips are deterministic: the same batches again.
  assert_batches_equal(batches, take(pipeline.create_train_dataset(config), 6))


def test_unreadable_validation_images_are_skipped_and_counted(bad_face_dir):
  config = make_config(image_dir=str(bad_face_dir), validation_fraction=1.0)
  before = skips.skipped_input_counts()['images']
  images, _ = evaluation_set.validation_images(config, SIZE, 9)
  assert len(images) == 5  # the five readable files, each once
  assert skips.skipped_input_counts()['images'] - before == 4


def test_folders_without_usable_images_fail_at_once_naming_the_folder(tmp_path):
  empty = tmp_path / 'empty'
  empty.mkdir()
  (empty / 'notes.txt').write_text('no images')
  with pytest.raises(ValueError, match=str(empty)):
    pipeline.create_train_dataset(make_config(image_dir=str(empty)))
  broken = tmp_path / 'broken'
  broken.mkdir()
  for k in range(3):
    (broken / f'{k}.jpg').write_bytes(b'garbage')
  with pytest.raises(ValueError, match=f'no readable image in {broken}'):
    pipeline.create_train_dataset(make_config(image_dir=str(broken), validation_fraction=0.0))
  with pytest.raises(FileNotFoundError, match='missing'):
    pipeline.create_train_dataset(make_config(image_dir=str(tmp_path / 'missing')))
  with pytest.raises(ValueError, match='image_dir'):
    pipeline.create_train_dataset(make_config(image_dir=''))


def write_mask_set(directory, hole_white):
  """Six 64x64 masks: four with holes, one without, one all hole."""
  directory.mkdir(parents=True)
  for k in range(6):
    hole = np.zeros((64, 64), bool)
    if k < 4:
      hole[8 * k : 8 * k + 20, 10:50] = True
    elif k == 5:
      hole[:] = True
    white = hole if hole_white else ~hole
    Image.fromarray(white.astype(np.uint8) * 255).save(directory / f'{2000 * (k % 6) + k:05d}.png')
  return directory


def resized_set_masks(mask_dir):
  """The files of a hole-white mask set as known-masks resized to SIZE, as the pipeline does."""
  sources = [(~(np.asarray(Image.open(p)) > 127)).astype(np.float32)
             for p in sorted(mask_dir.iterdir())]
  return [cv2.resize(s, (SIZE, SIZE), interpolation=cv2.INTER_AREA) >= 0.5 for s in sources]


@pytest.mark.parametrize('fraction', [0.0, 0.5, 1.0])
def test_generated_mask_fraction_mixes_generated_and_set_masks(face_dir, tmp_path, fraction):
  mask_dir = write_mask_set(tmp_path / 'nvidia', hole_white=True)
  config = make_config(image_dir=str(face_dir), masks='nvidia_irregular', mask_dir=str(mask_dir),
                       data_dir=str(tmp_path / 'tfds'), mask_augment=False,
                       generated_mask_fraction=fraction)
  masks = np.concatenate([flat(b, 'mask') for b in
                          take(pipeline.create_train_dataset(config), 6)])
  sources = resized_set_masks(mask_dir)
  from_set = np.mean([any(np.array_equal(m[..., 0] == 1, s) for s in sources) for m in masks])
  expected = {0.0: (1.0, 1.0), 0.5: (0.25, 0.75), 1.0: (0.0, 0.0)}[fraction]
  assert expected[0] <= from_set <= expected[1]


def test_generated_mask_fraction_outside_unit_interval_is_rejected(face_dir, tmp_path):
  mask_dir = write_mask_set(tmp_path / 'nvidia', hole_white=True)
  config = make_config(image_dir=str(face_dir), masks='nvidia_irregular', mask_dir=str(mask_dir),
                       data_dir=str(tmp_path / 'tfds'), generated_mask_fraction=1.5)
  with pytest.raises(ValueError, match='generated_mask_fraction'):
    pipeline.create_train_dataset(config)


@pytest.mark.parametrize('augment', [True, False])
def test_nvidia_mask_set_prepared_on_first_use(face_dir, tmp_path, augment):
  mask_dir = write_mask_set(tmp_path / 'nvidia', hole_white=True)
  config = make_config(
      image_dir=str(face_dir),
      masks='nvidia_irregular',
      mask_dir=str(mask_dir),
      data_dir=str(tmp_path / 'tfds'),
      mask_augment=augment,
  )
  before = skips.skipped_input_counts()['masks']
  batches = take(pipeline.create_train_dataset(config), 4)
  masks = np.concatenate([flat(b, 'mask') for b in batches])
  assert set(np.unique(masks)) == {0.0, 1.0}
  known_fraction = masks.mean(axis=(1, 2, 3))
  assert ((known_fraction > 0) & (known_fraction < 1)).all()  # degenerate masks are redrawn ...
  assert skips.skipped_input_counts()['masks'] > before  # ... and counted
  if not augment:  # then each mask is a resized file of the set
    sources = resized_set_masks(mask_dir)
    assert all(any(np.array_equal(m[..., 0] == 1, s) for s in sources) for m in masks)


def test_qd_imd_masks_keep_white_as_known(face_dir, tmp_path):
  manual_dir = tmp_path / 'qd'
  write_mask_set(manual_dir / 'train', hole_white=False)
  shutil.copytree(manual_dir / 'train', manual_dir / 'test')
  prepare.prepare_dataset('qd_imd', manual_dir, tmp_path / 'tfds')
  config = make_config(
      image_dir=str(face_dir), masks='qd_imd', data_dir=str(tmp_path / 'tfds'), mask_augment=False
  )
  masks = np.concatenate(
      [flat(b, 'mask') for b in take(pipeline.create_train_dataset(config), 2)]
  )
  hole_ratios = 1.0 - masks.mean(axis=(1, 2, 3))
  assert ((hole_ratios > 0.05) & (hole_ratios < 0.5)).all()  # the holes are the small black bands


def test_unprepared_sources_say_how_to_prepare(face_dir, tmp_path):
  config = make_config(image_dir=str(face_dir), masks='qd_imd', data_dir=str(tmp_path))
  with pytest.raises(FileNotFoundError, match='define_jax.datasets.prepare'):
    pipeline.create_train_dataset(config)
  with pytest.raises(FileNotFoundError, match='define_jax.datasets.prepare'):
    pipeline.create_train_dataset(make_config(dataset='ffhq', data_dir=str(tmp_path)))
  with pytest.raises(ValueError, match='unknown masks'):
    pipeline.create_train_dataset(make_config(image_dir=str(face_dir), masks='squares'))


def test_ffhq_dataset(tmp_path):
  manual_dir = tmp_path / 'manual' / 'images1024x1024'
  for number in (0, 1, 2, 60000, 60001):
    (manual_dir / f'{number // 1000 * 1000:05d}').mkdir(parents=True, exist_ok=True)
    Image.fromarray(smooth_photo(64, 64, number)).save(
        manual_dir / f'{number // 1000 * 1000:05d}/{number:05d}.png'
    )
  prepare.prepare_dataset('ffhq/256', manual_dir.parent, tmp_path / 'tfds')
  config = make_config(
      dataset='ffhq', data_dir=str(tmp_path / 'tfds'), batch_size=4, num_eval_images=3
  )
  (batch,) = take(pipeline.create_train_dataset(config), 1)
  assert batch['image'].shape == (4, 1, SIZE, SIZE, 3)
  assert len(evaluation_set.validation_images(config, SIZE, 3)[0]) == 2  # the two validation images


def test_quickstart_photos_with_random_crops():
  config = make_config(dataset='quickstart', image_size=64, num_eval_images=12)
  (batch,) = take(pipeline.create_train_dataset(config), 1)
  images = flat(batch, 'image')
  assert images.shape == (8, 64, 64, 3) and len({image.tobytes() for image in images}) == 8
  # Two validation photos, twelve fixed crops of them.
  crops, _ = evaluation_set.validation_images(config, 64, 12)
  assert len({crop.tobytes() for crop in crops}) == 12
  np.testing.assert_array_equal(crops, evaluation_set.validation_images(config, 64, 12)[0])


def test_real_faces_with_real_nvidia_masks(shared_data, tmp_path):
  """UTKFace (one file name has a space) with a few real NVIDIA masks, augmented."""
  manual_dir = tmp_path / 'nvidia'
  manual_dir.mkdir()
  for number in (0, 2002, 4004, 6006, 8008, 10010):
    os.symlink(
        os.path.join(shared_data, 'masks', 'nvidia_irregular', f'{number:05d}.png'),
        manual_dir / f'{number:05d}.png',
    )
  config = make_config(
      image_dir=os.path.join(shared_data, 'faces', 'utkface'),
      image_size=64,
      masks='nvidia_irregular',
      mask_dir=str(manual_dir),
      data_dir=str(tmp_path / 'tfds'),
  )
  batches = take(pipeline.create_train_dataset(config), 2)
  for batch in batches:
    assert batch['image'].shape == (4, 2, 64, 64, 3) and batch['image'].std() > 0.05
    known_fraction = flat(batch, 'mask').mean(axis=(1, 2, 3))
    assert ((known_fraction > 0) & (known_fraction < 1)).all()
  faces = make_config(image_dir=os.path.join(shared_data, 'faces', 'utkface'), image_size=64)
  assert len(evaluation_set.validation_images(faces, 64, 10)[0]) == 10


def test_face_part_fraction_replaces_that_share_of_masks():
  from configs import tiny
  from define_jax.faces import faces
  from define_jax.data import mask_sources
  config = tiny.get_config()
  config.input.masks = 'generated'
  config.input.face_part_mask_fraction = 0.5
  maker = mask_sources.mask_maker(config, 1)
  size = config.model.image_size
  eyes = (faces.FACE_TEMPLATE[:2] * size).astype(int)
  rng = np.random.default_rng(0)
  drawn = [maker.draw(rng) for _ in range(200)]
  over_an_eye = [known for known in drawn if min(known[y, x] for x, y in eyes) == 0
                 and known.mean() > 0.8]
  assert 60 < len(over_an_eye) < 140  # About half are face parts, half of those eyes.
  config.input.face_part_mask_fraction = 1.5
  with pytest.raises(ValueError, match='face_part_mask_fraction'):
    mask_sources.mask_maker(config, 1)
