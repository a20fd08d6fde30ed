"""AVD: E, D and T trained together on Eq. 1-3 of the paper (section 3.4)."""
from __future__ import annotations

import keras
import tensorflow as tf
from keras import ops

from avd_tf.models.decoder import Decoder
from avd_tf.models.encoder import Encoder
from avd_tf.models.teacher import Teacher


def _global_mean(per_example):
    """Mean over the global batch: the replica's sum / (replica batch * replicas).

    Keras optimizers sum gradients over the replicas of a `tf.distribute`
    strategy, so each replica's loss must carry its share of the global mean.
    """
    return tf.nn.compute_average_loss(per_example)


@keras.saving.register_keras_serializable(package="avd_tf")
class AVD(keras.Model):
    """Adversarial Video Distillation: E learns to distil clips, helped by D and T.

    `call(clips)` returns E(clips), the distilled images, so `predict` gives
    images. `fit` takes `(clips, real_frames)`: clips (B, T, H, W, C) and
    single real RGB video frames (B', H, W, 3) (the paper's p_r), both in
    [-1, 1]. Each `train_step` runs, as in the usual alternating GAN loop:

    (a) T's update on Eq. 2: binary cross-entropy of T on real frames
        (target 1) and on E(clips) (target 0);
    (b) E and D's update on Eq. 3, `lam * L_rec + (1 - lam) * L_adv`, with
        L_rec (Eq. 1) the mean squared error between D(E(clips)) and the
        clips, and L_adv the non-saturating generator loss -log T(E(clips))
        (Goodfellow et al. 2014), using T after (a).

    Our choices where the paper is silent:
    * Eq. 1 sums squared errors; we average them over all elements so that
      `lam` does not depend on the clip size.
    * E's weights do not change in (a), so one forward pass of E (in training
      mode, updating BN statistics once) serves both updates.
    * T always judges E's 3-channel image against real RGB frames, also for
      the flow stream (C = 2): T "knows the distribution of realistic
      images" (section 3), and E's output is an image in both streams.
    * With `lam == 1` the E+D update is a plain auto-encoder that does not
      touch T (T still trains, harmlessly); `gen_loss` is then reported from
      T's logits in (a), for monitoring only.
    * Losses are computed from T's logits (`from_logits`), for stability.
    * Under a `tf.distribute` strategy each replica's loss is its share of
      the global-batch mean; E and D use synchronised batch norm by default,
      so several devices train as one.

    Metrics: `rec_loss`, `gen_loss`, `ed_loss` (the Eq. 3 total),
    `teacher_loss` (Eq. 2 as a loss), `teacher_acc_real`, `teacher_acc_fake`
    (T's accuracy in (a), before its update); `evaluate` reports `rec_loss`
    and `psnr` (dB, frames mapped to [0, 1], averaged over frames) and, for
    RGB clips, `scene_psnr`: the PSNR of E's image against the clip's mean
    frame, a measure of how much the image looks like the filmed scene
    (section 3.3's aim), which reconstruction alone does not ask for.
    """

    def __init__(
        self, encoder: Encoder, decoder: Decoder, teacher: Teacher, lam: float = 0.95, **kwargs
    ):
        super().__init__(**kwargs)
        if not 0.0 <= float(lam) <= 1.0:
            raise ValueError(f"AVD: lam must be in [0, 1] (Eq. 3), got {lam}")
        self.encoder = encoder
        self.decoder = decoder
        self.teacher = teacher
        self.lam = float(lam)
        self.t_optimizer = None
        self._avd_compile_config = {}
        self.rec_tracker = keras.metrics.Mean(name="rec_loss")
        self.gen_tracker = keras.metrics.Mean(name="gen_loss")
        self.ed_tracker = keras.metrics.Mean(name="ed_loss")
        self.teacher_tracker = keras.metrics.Mean(name="teacher_loss")
        self.acc_real_tracker = keras.metrics.Mean(name="teacher_acc_real")
        self.acc_fake_tracker = keras.metrics.Mean(name="teacher_acc_fake")
        self.psnr_tracker = keras.metrics.Mean(name="psnr")
        self.scene_psnr_tracker = keras.metrics.Mean(name="scene_psnr")

    @property
    def metrics(self):
        return [
            self.rec_tracker,
            self.gen_tracker,
            self.ed_tracker,
            self.teacher_tracker,
            self.acc_real_tracker,
            self.acc_fake_tracker,
            self.psnr_tracker,
            self.scene_psnr_tracker,
        ]

    @property
    def ed_optimizer(self):
        """The optimizer of E and D (Keras' `self.optimizer`)."""
        return self.optimizer

    def compile(
        self,
        ed_optimizer,
        t_optimizer,
        run_eagerly: bool = False,
        steps_per_execution: int = 1,
        jit_compile="auto",
        auto_scale_loss: bool = True,
    ):
        """Sets the optimizers of E+D and of T; other arguments as `keras.Model.compile`.

        Under the "mixed_float16" policy both optimizers are wrapped in a
        `LossScaleOptimizer` (when `auto_scale_loss`), as Keras does for one.
        """
        ed_optimizer = keras.optimizers.get(ed_optimizer)
        t_optimizer = keras.optimizers.get(t_optimizer)
        if ed_optimizer is t_optimizer:
            raise ValueError("AVD.compile: E+D and T need two distinct optimizer instances")
        super().compile(
            optimizer=ed_optimizer,
            run_eagerly=run_eagerly,
            steps_per_execution=steps_per_execution,
            jit_compile=jit_compile,
            auto_scale_loss=auto_scale_loss,
        )
        # Serialised now: holding the optimizers themselves here would make
        # `.keras` saving find them twice.
        self._avd_compile_config = {
            "ed_optimizer": keras.saving.serialize_keras_object(ed_optimizer),
            "t_optimizer": keras.saving.serialize_keras_object(t_optimizer),
            "run_eagerly": run_eagerly,
            "steps_per_execution": steps_per_execution,
            "jit_compile": jit_compile,
            "auto_scale_loss": auto_scale_loss,
        }
        if (
            auto_scale_loss
            and self.dtype_policy.name == "mixed_float16"
            and not isinstance(t_optimizer, keras.optimizers.LossScaleOptimizer)
        ):
            t_optimizer = keras.optimizers.LossScaleOptimizer(
                t_optimizer, name="t_loss_scale_optimizer"
            )
        self.t_optimizer = t_optimizer
        if self.built:
            self._build_optimizers()

    def _build_optimizers(self):
        # Each optimizer gets slots for its own networks only; Keras would
        # otherwise build `self.optimizer` on all trainable weights, T's too.
        self.optimizer.build(self.encoder.trainable_variables + self.decoder.trainable_variables)
        self.t_optimizer.build(self.teacher.trainable_variables)

    def get_compile_config(self):
        if not self.compiled:
            return {}
        return dict(self._avd_compile_config)

    def compile_from_config(self, config):
        config = dict(config)
        for key in ("ed_optimizer", "t_optimizer"):
            config[key] = keras.saving.deserialize_keras_object(config[key])
        self.compile(**config)

    def build(self, input_shape):
        if len(input_shape) != 5:
            raise ValueError(f"AVD: expected clips (B, T, H, W, C), got shape {input_shape}")
        frames, channels = input_shape[1], input_shape[4]
        if frames is not None and frames != self.decoder.num_frames:
            raise ValueError(
                f"AVD: clips have {frames} frames but the decoder's temporal strides "
                f"{self.decoder.temporal_strides} produce {self.decoder.num_frames}"
            )
        if channels != self.decoder.out_channels:
            raise ValueError(
                f"AVD: clips have {channels} channels but the decoder outputs "
                f"{self.decoder.out_channels}"
            )
        image_shape = self.encoder.compute_output_shape(input_shape)
        # Loading a `.keras` file builds the networks from their own configs first.
        for network, shape in (
            (self.encoder, input_shape),
            (self.decoder, image_shape),
            (self.teacher, image_shape),
        ):
            if not network.built:
                network.build(shape)
        if self.compiled:
            self._build_optimizers()

    def call(self, clips, training=None):
        return self.encoder(clips, training=training)

    def compute_output_shape(self, input_shape):
        return self.encoder.compute_output_shape(input_shape)

    def _teacher_update(self, real_frames, images):
        """T's step on Eq. 2.

        Returns T's logits on the real frames and on the images, and the
        per-example losses on each, all from before the step.
        """
        t_vars = self.teacher.trainable_variables
        with tf.GradientTape() as tape:
            real_logits = self.teacher(real_frames, training=True, return_logits=True)[:, 0]
            fake_logits = self.teacher(images, training=True, return_logits=True)[:, 0]
            # Binary cross-entropy from logits: -log sigmoid(z) = softplus(-z)
            # for target 1, -log(1 - sigmoid(z)) = softplus(z) for target 0.
            real_losses = ops.softplus(-real_logits)
            fake_losses = ops.softplus(fake_logits)
            t_loss = _global_mean(real_losses) + _global_mean(fake_losses)
            scaled_t_loss = self.t_optimizer.scale_loss(t_loss)
        t_grads = tape.gradient(scaled_t_loss, t_vars)
        self.t_optimizer.apply_gradients(zip(t_grads, t_vars))
        return real_logits, fake_logits, real_losses, fake_losses

    def train_step(self, data):
        clips, real_frames, _ = keras.utils.unpack_x_y_sample_weight(data)
        if real_frames is None:
            raise ValueError("AVD.train_step: expected data (clips, real_frames), got clips only")
        clips = tf.cast(clips, "float32")
        real_frames = tf.cast(real_frames, "float32")
        if real_frames.shape.rank != 4 or not real_frames.shape[1:].is_compatible_with(
            clips.shape[2:4] + [3]
        ):
            raise ValueError(
                f"AVD.train_step: real frames must be RGB images (B, H, W, 3) of the clips' "
                f"size {tuple(clips.shape[2:4])}, got shape {tuple(real_frames.shape)}"
            )
        ed_vars = self.encoder.trainable_variables + self.decoder.trainable_variables
        with tf.GradientTape() as tape:
            images = self.encoder(clips, training=True)
            reconstruction = self.decoder(images, training=True)
            rec_per_example = ops.mean(ops.square(reconstruction - clips), axis=(1, 2, 3, 4))
            with tape.stop_recording():
                real_logits, fake_logits, real_losses, fake_losses = self._teacher_update(
                    real_frames, images
                )
            if self.lam < 1.0:
                gen_logits = self.teacher(images, training=True, return_logits=True)[:, 0]
                gen_per_example = ops.softplus(-gen_logits)
                ed_loss = self.lam * _global_mean(rec_per_example) + (
                    1.0 - self.lam
                ) * _global_mean(gen_per_example)
            else:
                gen_per_example = ops.softplus(-fake_logits)
                ed_loss = _global_mean(rec_per_example)
            scaled_ed_loss = self.optimizer.scale_loss(ed_loss)
        ed_grads = tape.gradient(scaled_ed_loss, ed_vars)
        self.optimizer.apply_gradients(zip(ed_grads, ed_vars))

        batch = ops.shape(clips)[0]
        rec_mean = ops.mean(rec_per_example)
        gen_mean = ops.mean(gen_per_example)
        self.rec_tracker.update_state(rec_mean, sample_weight=batch)
        self.gen_tracker.update_state(gen_mean, sample_weight=batch)
        self.ed_tracker.update_state(
            self.lam * rec_mean + (1.0 - self.lam) * gen_mean, sample_weight=batch
        )
        self.teacher_tracker.update_state(
            ops.mean(real_losses) + ops.mean(fake_losses), sample_weight=batch
        )
        self.acc_real_tracker.update_state(
            ops.mean(ops.cast(real_logits > 0, "float32")),
            sample_weight=ops.shape(real_frames)[0],
        )
        self.acc_fake_tracker.update_state(
            ops.mean(ops.cast(fake_logits < 0, "float32")), sample_weight=batch
        )
        return {
            tracker.name: tracker.result()
            for tracker in self.metrics
            if tracker not in (self.psnr_tracker, self.scene_psnr_tracker)
        }

    def test_step(self, data):
        clips = tf.cast(keras.utils.unpack_x_y_sample_weight(data)[0], "float32")
        images = self.encoder(clips, training=False)
        reconstruction = self.decoder(images, training=False)
        rec_per_example = ops.mean(ops.square(reconstruction - clips), axis=(1, 2, 3, 4))
        # tf.image.psnr reduces the last three axes: one value per frame.
        psnr_per_frame = tf.image.psnr(
            (reconstruction + 1.0) / 2.0, (clips + 1.0) / 2.0, max_val=1.0
        )
        batch = ops.shape(clips)[0]
        self.rec_tracker.update_state(ops.mean(rec_per_example), sample_weight=batch)
        self.psnr_tracker.update_state(ops.mean(psnr_per_frame), sample_weight=batch)
        results = {"rec_loss": self.rec_tracker.result(), "psnr": self.psnr_tracker.result()}
        if clips.shape[-1] == 3:
            scene_psnr = tf.image.psnr(
                (images + 1.0) / 2.0, (ops.mean(clips, axis=1) + 1.0) / 2.0, max_val=1.0
            )
            self.scene_psnr_tracker.update_state(ops.mean(scene_psnr), sample_weight=batch)
            results["scene_psnr"] = self.scene_psnr_tracker.result()
        return results

    def get_config(self):
        return {
            **super().get_config(),
            "encoder": keras.saving.serialize_keras_object(self.encoder),
            "decoder": keras.saving.serialize_keras_object(self.decoder),
            "teacher": keras.saving.serialize_keras_object(self.teacher),
            "lam": self.lam,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for key in ("encoder", "decoder", "teacher"):
            config[key] = keras.saving.deserialize_keras_object(config[key])
        return cls(**config)
