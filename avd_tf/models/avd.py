"""AVD: E, D and T trained together on Eq. 1-3 of the paper (section 3.4)."""
from __future__ import annotations

import keras
import tensorflow as tf
from keras import ops

from avd_tf.models.decoder import Decoder
from avd_tf.models.diagnostics import GradientRatio, MotionR2, clip_psnrs
from avd_tf.models.encoder import Encoder
from avd_tf.models.teacher import Teacher

# Eq. 1's reduction over a clip's elements: the paper's sum, or their mean.
REC_LOSSES = ("sum", "mean")
# E's side of Eq. 2: "saturating" minimises log(1 - T(E(V))) as Eq. 2 reads;
# "nonsaturating" minimises -log T(E(V)) (Goodfellow et al. 2014).
GEN_LOSSES = ("nonsaturating", "saturating")


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
    one single real RGB video frame per clip (B, H, W, 3) (the paper's p_r,
    `avd_tf.inputs.avd_dataset` draws them from other videos), both in
    [-1, 1]; `evaluate` takes clips alone. Each `train_step` runs, as in the
    usual alternating GAN loop:

    (a) T's update on Eq. 2: binary cross-entropy of T on real frames
        (target 1) and on E(clips) (target 0);
    (b) E and D's update on Eq. 3, `lam * L_rec + (1 - lam) * L_adv`, with
        L_rec (Eq. 1) the squared error between D(E(clips)) and the clips,
        summed over each clip's elements as Eq. 1 writes it
        (`rec_loss="sum"`, default) or averaged over them (`"mean"`), then
        averaged over the batch; and L_adv E's side of Eq. 2, using T after
        (a): `gen_loss="nonsaturating"` (default) -log T(E(clips)), or
        `"saturating"` log(1 - T(E(clips))) as Eq. 2 reads.

    With the sum, `lam` is the paper's weight: the teacher is the "weak
    supervision" of the abstract (on 8 x 32 x 32 x 3 clips a lam of 0.95
    weighs T about 1 / 19 / 24576 of reconstruction). The mean form makes
    `lam` independent of the clip size; its lam 0.95 is a sum-form lam of
    about 1 - 2e-6 on those clips.

    Our choices where the paper is silent:
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

    Metrics: `rec_loss` (Eq. 1 per clip, in the chosen reduction),
    `gen_loss`, `ed_loss` (the Eq. 3 total), `teacher_loss` (Eq. 2 as a
    loss), `teacher_acc_real`, `teacher_acc_fake` (T's accuracy in (a),
    before its update) and `grad_ratio`: the norm of the adversarial term's
    gradient at E's output over the reconstruction term's (both weighted by
    lam, so it says which term drives E). `evaluate` reports `rec_loss`,
    `psnr` and the motion diagnostic of `avd_tf.models.diagnostics`
    (`still_psnr`, `motion_gain_db`, `motion_r2`), and, for RGB clips,
    `scene_psnr`: the PSNR of E's image against the clip's mean frame, a
    measure of how much the image looks like the filmed scene (section
    3.3's aim), which reconstruction alone does not ask for.
    """

    def __init__(
        self,
        encoder: Encoder,
        decoder: Decoder,
        teacher: Teacher,
        lam: float = 0.95,
        rec_loss: str = "sum",
        gen_loss: str = "nonsaturating",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not 0.0 <= float(lam) <= 1.0:
            raise ValueError(f"AVD: lam must be in [0, 1] (Eq. 3), got {lam}")
        if rec_loss not in REC_LOSSES:
            raise ValueError(f"AVD: rec_loss must be one of {REC_LOSSES}, got {rec_loss!r}")
        if gen_loss not in GEN_LOSSES:
            raise ValueError(f"AVD: gen_loss must be one of {GEN_LOSSES}, got {gen_loss!r}")
        self.encoder = encoder
        self.decoder = decoder
        self.teacher = teacher
        self.lam = float(lam)
        self.rec_loss = rec_loss
        self.gen_loss = gen_loss
        self.t_optimizer = None
        self._avd_compile_config = {}
        self.rec_tracker = keras.metrics.Mean(name="rec_loss")
        self.gen_tracker = keras.metrics.Mean(name="gen_loss")
        self.ed_tracker = keras.metrics.Mean(name="ed_loss")
        self.teacher_tracker = keras.metrics.Mean(name="teacher_loss")
        self.acc_real_tracker = keras.metrics.Mean(name="teacher_acc_real")
        self.acc_fake_tracker = keras.metrics.Mean(name="teacher_acc_fake")
        self.grad_ratio_tracker = GradientRatio(name="grad_ratio")
        self.psnr_tracker = keras.metrics.Mean(name="psnr")
        self.still_psnr_tracker = keras.metrics.Mean(name="still_psnr")
        self.motion_gain_tracker = keras.metrics.Mean(name="motion_gain_db")
        self.motion_r2_tracker = MotionR2(name="motion_r2")
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
            self.grad_ratio_tracker,
            *self._evaluation_trackers,
        ]

    @property
    def _evaluation_trackers(self):
        return [
            self.psnr_tracker,
            self.still_psnr_tracker,
            self.motion_gain_tracker,
            self.motion_r2_tracker,
            self.scene_psnr_tracker,
        ]

    def _step_trackers(self, evaluating: bool, scene: bool = True) -> list:
        """The trackers `train_step` (or `test_step`) reports: the same keys in both places.

        `scene`: whether evaluation has a scene to compare E's image with
        (RGB clips; flow clips have none).
        """
        if not evaluating:
            return [t for t in self.metrics if t not in self._evaluation_trackers]
        trackers = [self.rec_tracker, *self._evaluation_trackers]
        if not scene:
            trackers.remove(self.scene_psnr_tracker)
        return trackers

    def get_metrics_result(self):
        """The results of the trackers the last `fit` epoch or `evaluate` updated.

        Keras reads these (cross-replica totals) instead of the last step's
        per-replica logs only when both have the same keys, so `train_step`
        and `test_step` return exactly these keys. `evaluate` and `fit`
        reset every tracker first; only evaluation updates `psnr`.
        """
        evaluating = bool(self.psnr_tracker.count > 0)
        scene = bool(self.scene_psnr_tracker.count > 0)
        return {t.name: t.result() for t in self._step_trackers(evaluating, scene)}

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

    def _reconstruction_errors(self, clips, reconstruction):
        """Eq. 1 per clip: the sum (or mean) of squared errors over its elements."""
        reduce = ops.sum if self.rec_loss == "sum" else ops.mean
        return reduce(ops.square(reconstruction - clips), axis=(1, 2, 3, 4))

    def _generator_losses(self, logits):
        """E's side of Eq. 2 per image, from T's logits z (T(x) = sigmoid(z))."""
        if self.gen_loss == "saturating":
            return -ops.softplus(logits)  # log(1 - sigmoid(z))
        return ops.softplus(-logits)  # -log sigmoid(z)

    def train_step(self, data):
        clips, real_frames, _ = keras.utils.unpack_x_y_sample_weight(data)
        if real_frames is None:
            raise ValueError("AVD.train_step: expected data (clips, real_frames), got clips only")
        clips = tf.cast(clips, "float32")
        real_frames = tf.cast(real_frames, "float32")
        if real_frames.shape.rank != 4 or not real_frames.shape.is_compatible_with(
            clips.shape[:1] + clips.shape[2:4] + [3]
        ):
            raise ValueError(
                f"AVD.train_step: real frames must be RGB images (B, H, W, 3), one per clip, of "
                f"the clips' size {tuple(clips.shape[2:4])}, got shape "
                f"{tuple(real_frames.shape)} for {clips.shape[0]} clips"
            )
        encoder_vars = self.encoder.trainable_variables
        decoder_vars = self.decoder.trainable_variables
        # One tape per network: each Eq. 3 term is differentiated to E's
        # output on its own (for grad_ratio), then E once with their sum;
        # no tape holds ops another differentiates, so no dead gradient ops.
        with tf.GradientTape() as encoder_tape:
            images = self.encoder(clips, training=True)
        real_logits, fake_logits, real_losses, fake_losses = self._teacher_update(
            real_frames, images
        )
        with tf.GradientTape() as decoder_tape:
            decoder_tape.watch(images)
            reconstruction = self.decoder(images, training=True)
            rec_per_example = self._reconstruction_errors(clips, reconstruction)
            rec_term = self.optimizer.scale_loss(self.lam * _global_mean(rec_per_example))
        rec_image_grad, *decoder_grads = decoder_tape.gradient(rec_term, [images, *decoder_vars])
        if self.lam < 1.0:
            with tf.GradientTape() as teacher_tape:
                teacher_tape.watch(images)
                gen_logits = self.teacher(images, training=True, return_logits=True)[:, 0]
                gen_per_example = self._generator_losses(gen_logits)
                adv_term = self.optimizer.scale_loss(
                    (1.0 - self.lam) * _global_mean(gen_per_example)
                )
            adv_image_grad = teacher_tape.gradient(adv_term, images)
        else:
            gen_per_example = self._generator_losses(fake_logits)
            adv_image_grad = ops.zeros_like(rec_image_grad)
        encoder_grads = encoder_tape.gradient(
            images, encoder_vars, output_gradients=rec_image_grad + adv_image_grad
        )
        self.optimizer.apply_gradients(
            zip(encoder_grads + decoder_grads, encoder_vars + decoder_vars)
        )

        # Per-example values, as in `test_step`: a replica's empty batch adds nothing.
        self.rec_tracker.update_state(rec_per_example)
        self.gen_tracker.update_state(gen_per_example)
        self.ed_tracker.update_state(
            self.lam * rec_per_example + (1.0 - self.lam) * gen_per_example
        )
        self.teacher_tracker.update_state(real_losses + fake_losses)
        self.acc_real_tracker.update_state(ops.cast(real_logits > 0, "float32"))
        self.acc_fake_tracker.update_state(ops.cast(fake_logits < 0, "float32"))
        self.grad_ratio_tracker.update_state(adv_image_grad, rec_image_grad)
        return {tracker.name: tracker.result() for tracker in self._step_trackers(False)}

    def _encode_decode(self, clips):
        """E(clips) and D(E(clips)) in inference mode; an empty batch gives empty outputs.

        A replica's share of a last batch smaller than the replica count is
        empty, and oneDNN's convolutions (TF 2.21 on CPU) return their input
        for an empty batch, which the next layer then refuses.
        """
        def run():
            images = self.encoder(clips, training=False)
            return images, self.decoder(images, training=False)

        def empty():
            shape = ops.shape(clips)
            return tf.zeros([0, shape[2], shape[3], 3]), tf.zeros_like(clips[:0])

        return tf.cond(ops.shape(clips)[0] > 0, run, empty)

    def test_step(self, data):
        clips = tf.cast(keras.utils.unpack_x_y_sample_weight(data)[0], "float32")
        images, reconstruction = self._encode_decode(clips)
        rec_per_example = self._reconstruction_errors(clips, reconstruction)
        psnrs = clip_psnrs(clips, reconstruction)
        # Per-clip values, so a replica's empty last batch adds nothing (a
        # batch mean would be NaN).
        self.rec_tracker.update_state(rec_per_example)
        self.psnr_tracker.update_state(psnrs["psnr"])
        self.still_psnr_tracker.update_state(psnrs["still_psnr"])
        self.motion_gain_tracker.update_state(psnrs["motion_gain_db"])
        self.motion_r2_tracker.update_state(clips, reconstruction)
        scene = clips.shape[-1] == 3
        if scene:
            scene_psnr = tf.image.psnr(
                (images + 1.0) / 2.0, (ops.mean(clips, axis=1) + 1.0) / 2.0, max_val=1.0
            )
            self.scene_psnr_tracker.update_state(scene_psnr)
        return {t.name: t.result() for t in self._step_trackers(True, scene)}

    def get_config(self):
        return {
            **super().get_config(),
            "encoder": keras.saving.serialize_keras_object(self.encoder),
            "decoder": keras.saving.serialize_keras_object(self.decoder),
            "teacher": keras.saving.serialize_keras_object(self.teacher),
            "lam": self.lam,
            "rec_loss": self.rec_loss,
            "gen_loss": self.gen_loss,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for key in ("encoder", "decoder", "teacher"):
            config[key] = keras.saving.deserialize_keras_object(config[key])
        return cls(**config)
